"""The ctypes libfabric binding against the real Debian libfabric (1.17) and its own `fi_info`.

"Agree with fi_info" means, precisely:
- getinfo() is, entry for entry and in order, what `fi_info -v` prints (libfabric's NULL-hints
  list): provider (core;utility as "tcp;ofi_rxm"), fabric, domain, endpoint type, capabilities,
  address format, provider and API version.
- getinfo(P) is what `fi_info -v -p P` prints, for every provider P that `fi_info -l` names:
  libfabric's own filter, so "tcp" also gives "tcp;ofi_rxm", and a provider without usable
  hardware or interfaces here (psm2, hooks, ...) gives [] where fi_info exits -61 (no data).
- Every name inside a getinfo() provider string is one that `fi_info -l` lists, at the version
  it lists; a name `fi_info -l` lists is missing from getinfo() only when getinfo(name) is [].
"""

import ctypes
import gc
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from cordee.errors import InputError
from cordee.interconnect import libfabric as lf
from cordee.interconnect.libload import LibraryNotFound, ld_cache_lookup, parse_ldconfig

FI_INFO = shutil.which("fi_info")
pytestmark = pytest.mark.skipif(FI_INFO is None, reason="fi_info missing: apt-get install libfabric-bin")


@pytest.fixture(scope="module")
def fabric():
    return lf.Libfabric()


def run_fi_info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FI_INFO, *args], capture_output=True, text=True, timeout=60, check=False)


def parse_fi_info_verbose(text: str) -> list[lf.FabricInfo]:
    """The fields cordee reads, from `fi_info -v` (YAML-like: '---' per entry, nested by indent)."""
    entries = []
    for doc in text.split("\n---"):
        path: list[tuple[int, str]] = []
        fields = {}
        for line in doc.splitlines():
            m = re.match(r"^( *)([A-Za-z_]+):\s*(.*)$", line)
            if not m:
                continue
            indent, key, value = len(m.group(1)), m.group(2), m.group(3).strip()
            path = [(i, k) for i, k in path if i < indent]
            if value == "":
                path.append((indent, key))
                continue
            fields[".".join([k for _, k in path] + [key])] = value
        if "fi_info.caps" not in fields:
            continue
        entries.append(
            lf.FabricInfo(
                provider=fields["fi_info.fi_fabric_attr.prov_name"],
                fabric=fields["fi_info.fi_fabric_attr.name"],
                domain=fields["fi_info.fi_domain_attr.name"],
                ep_type=fields["fi_info.fi_ep_attr.type"],
                caps=tuple(c for c in re.split(r"[\s,\[\]]+", fields["fi_info.caps"]) if c),
                addr_format=fields["fi_info.addr_format"],
                prov_version=fields["fi_info.fi_fabric_attr.prov_version"],
                api_version=fields["fi_info.fi_fabric_attr.api_version"],
            )
        )
    return entries


def fi_info_providers() -> dict[str, str]:
    """`fi_info -l`: 'name:' lines, each followed by 'version: x.y'."""
    out = run_fi_info("-l").stdout
    return dict(re.findall(r"^(\S+):\s*\n\s+version:\s*(\S+)", out, flags=re.M))


def test_finds_the_library_the_dynamic_linker_loads(fabric):
    loc = lf.find_libfabric(environ={})
    assert loc.how == "linker" and os.path.basename(loc.path).startswith("libfabric.so.1")
    # ground truth: what dlopen("libfabric.so.1") maps into a fresh process
    probe = textwrap.dedent("""
        import ctypes
        ctypes.CDLL("libfabric.so.1")
        print(next(l.split()[-1] for l in open("/proc/self/maps") if "libfabric.so" in l))
    """)
    mapped = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True, env={}
    ).stdout.strip()
    assert os.path.realpath(mapped) == loc.path
    assert os.path.realpath(ld_cache_lookup("libfabric.so.1")) == loc.path


def test_ldconfig_parse_keeps_this_abi_only(tmp_path):
    lib32, lib64 = tmp_path / "lib32.so.1", tmp_path / "lib64.so.1"
    lib32.write_bytes(b"")
    lib64.write_bytes(b"")
    text = (
        f"\tlibx.so.1 (libc6) => {lib32}\n"
        f"\tlibx.so.1 (libc6,x86-64) => {lib64}\n"
        "\tliby.so.1 (libc6,x86-64) => /nonexistent/liby.so.1\n"
    )
    assert parse_ldconfig(text, "libx.so.1", "x86-64") == str(lib64)
    assert parse_ldconfig(text, "libx.so.1", None) == str(lib32)
    assert parse_ldconfig(text, "libx.so.1", "AArch64") is None
    assert parse_ldconfig(text, "liby.so.1", "x86-64") is None  # listed, but the file is gone


def test_version_matches_fi_info(fabric):
    out = run_fi_info("--version").stdout
    release = re.search(r"^libfabric: (\S+)$", out, flags=re.M).group(1)
    api = re.search(r"^libfabric api: (\S+)$", out, flags=re.M).group(1)
    assert fabric.version == release  # e.g. "1.17.0" on Debian 12
    assert fabric.api_version == api


def test_getinfo_equals_fi_info_entry_for_entry(fabric):
    expected = parse_fi_info_verbose(run_fi_info("-v").stdout)
    got = fabric.getinfo()
    assert len(expected) > 0
    assert got == expected
    providers = {name for info in got for name in info.provider.split(";")}
    assert {"tcp", "udp", "shm", "ofi_rxm"} <= providers  # Debian 12's build (Debian libfabric1 1.17)


def test_provider_filter_equals_fi_info_p_for_every_listed_provider(fabric):
    listed = fi_info_providers()
    assert {"tcp", "udp", "shm", "sockets", "ofi_rxm"} <= set(listed)
    for name in listed:
        r = run_fi_info("-v", "-p", name)
        expected = parse_fi_info_verbose(r.stdout) if r.returncode == 0 else []
        if r.returncode != 0:
            assert "-61" in r.stderr, (name, r.stderr)  # -FI_ENODATA: nothing matched
        got = fabric.getinfo(name)
        assert got == expected, name
        assert all(name in info.provider.split(";") for info in got), name


def test_providers_agree_with_fi_info_l(fabric):
    listed = fi_info_providers()
    everything = fabric.getinfo()
    seen = set()
    for info in everything:
        for name in info.provider.split(";"):
            assert name in listed, (name, sorted(listed))
            seen.add(name)
        core = info.provider.split(";")[0]
        assert info.prov_version == listed[core] or info.prov_version in listed.values()
    for name in set(listed) - seen:
        assert fabric.getinfo(name) == [], f"{name} has entries but is missing from getinfo()"


def test_unknown_provider_is_empty_not_an_error(fabric):
    assert fabric.getinfo("no-such-provider") == []
    assert fabric.getinfo("tcp;no-such-utility") == []


@pytest.mark.parametrize("value", ["tcp", "tcp,udp", "^tcp", "^tcp,shm", "tcp,doesnotexist", "doesnotexist"])
def test_provider_filter_reads_fi_provider_as_libfabric_does(fabric, value):
    """provider_filter's reading of FI_PROVIDER predicts the core providers fi_info lists under it
    (libfabric reads the variable once per process, so fi_info, not this process, is asked)."""
    negated, names = lf.provider_filter(value)
    cores = {info.provider.split(";")[0] for info in fabric.getinfo()}
    r = subprocess.run(
        [FI_INFO], env=dict(os.environ, FI_PROVIDER=value), capture_output=True, text=True, timeout=60
    )
    listed = {p.split(";")[0] for p in re.findall(r"^provider: (\S+)$", r.stdout, flags=re.M)}
    assert listed == {core for core in cores if (core in names) != negated}, value
    if not listed:
        assert "-61" in r.stdout + r.stderr  # -FI_ENODATA: what net show turns into a failure


def test_requested_api_newer_than_library_is_refused(fabric):
    newer = fabric.api_version_code + 1
    with pytest.raises(lf.LibfabricError) as e:
        fabric.getinfo(api_version=newer)
    assert e.value.rc == -38  # -FI_ENOSYS
    assert "fi_getinfo" in str(e.value)


def test_as_dict_is_plain_json_data(fabric):
    import json

    d = fabric.getinfo("tcp")[0].as_dict()
    assert set(d) == set(lf.FabricInfo._fields)
    assert json.loads(json.dumps(d)) == d and isinstance(d["caps"], list)


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def malloc_in_use() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    gc.collect()
    return libc.mallinfo2().uordblks


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("provider", [None, "tcp"])
def test_getinfo_frees_what_libfabric_allocates(fabric, provider):
    """fi_freeinfo for the result list and for the hints: 200 calls leave malloc's bytes in use
    flat (a leaked list is ~75 KB a call here, leaked hints ~0.7 KB) and RSS about flat."""
    for _ in range(200):  # warm up: provider init, allocator arenas
        fabric.getinfo(provider)
    used0, rss0 = malloc_in_use(), rss_bytes()
    for _ in range(200):
        fabric.getinfo(provider)
    used_growth, rss_growth = malloc_in_use() - used0, rss_bytes() - rss0
    assert used_growth < 32 * 1024, f"malloc in use grew {used_growth} bytes over 200 calls"
    assert rss_growth < 4 * 1024 * 1024, f"RSS grew {rss_growth} bytes over 200 calls"


def test_override_must_name_an_existing_file(tmp_path):
    with pytest.raises(LibraryNotFound) as e:
        lf.find_libfabric(environ={"CORDEE_LIBFABRIC_LIBRARY": str(tmp_path / "nope.so")})
    assert isinstance(e.value, InputError)
    assert "CORDEE_LIBFABRIC_LIBRARY" in str(e.value) and "nope.so" in str(e.value)
    real = lf.find_libfabric(environ={}).path
    loc = lf.find_libfabric(environ={"CORDEE_LIBFABRIC_LIBRARY": real})
    assert loc == (real, "override")
    assert lf.Libfabric(loc).getinfo("shm")


HEADER = "/usr/include/rdma/fabric.h"
LAYOUT_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <rdma/fabric.h>
#define OFF(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f))
int main(void) {
    OFF(fi_info, next); OFF(fi_info, caps); OFF(fi_info, mode); OFF(fi_info, addr_format);
    OFF(fi_info, src_addrlen); OFF(fi_info, dest_addrlen); OFF(fi_info, src_addr);
    OFF(fi_info, dest_addr); OFF(fi_info, handle); OFF(fi_info, tx_attr); OFF(fi_info, rx_attr);
    OFF(fi_info, ep_attr); OFF(fi_info, domain_attr); OFF(fi_info, fabric_attr); OFF(fi_info, nic);
    printf("fi_info.sizeof %zu\n", sizeof(struct fi_info));
    OFF(fi_fabric_attr, fabric); OFF(fi_fabric_attr, name); OFF(fi_fabric_attr, prov_name);
    OFF(fi_fabric_attr, prov_version); OFF(fi_fabric_attr, api_version);
    printf("fi_fabric_attr.sizeof %zu\n", sizeof(struct fi_fabric_attr));
    OFF(fi_domain_attr, domain); OFF(fi_domain_attr, name); OFF(fi_domain_attr, threading);
    OFF(fi_domain_attr, av_type); OFF(fi_domain_attr, mr_mode); OFF(fi_domain_attr, mr_key_size);
    OFF(fi_domain_attr, mr_iov_limit); OFF(fi_domain_attr, caps); OFF(fi_domain_attr, mode);
    OFF(fi_ep_attr, type);
    return 0;
}
"""


@pytest.mark.skipif(not os.path.exists(HEADER), reason=f"{HEADER} missing: apt-get install libfabric-dev")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")
def test_ctypes_layout_matches_the_installed_header(tmp_path):
    src, exe = tmp_path / "layout.c", tmp_path / "layout"
    src.write_text(LAYOUT_C)
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True, timeout=120)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=30).stdout
    c_side = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    structs = {
        "fi_info": lf.FiInfo,
        "fi_fabric_attr": lf.FiFabricAttr,
        "fi_domain_attr": lf.FiDomainAttrPrefix,
        "fi_ep_attr": lf.FiEpAttrPrefix,
    }
    assert len(c_side) == 32  # every line of LAYOUT_C
    for key, value in c_side.items():
        struct, field = key.split(".")
        if field == "sizeof":
            assert ctypes.sizeof(structs[struct]) == value, key
        else:
            assert getattr(structs[struct], field).offset == value, key
