"""cordee.interconnect.netplugin (resolve, probe, probe_child) against real NCCL net plugins
compiled here.

The C plugins under tests/netplugins/ are built with gcc at test time (netplugins/build.py), one
per ABI version, with property values that this file chooses; they are then found through NCCL's
own resolution rules (NCCL_NET_PLUGIN, LD_LIBRARY_PATH of the probe child) and every field of
every device must come back as written. Plugins that crash, hang, exit, export no known symbol
or exist but do not load (a dependency missing, another machine's ELF) must give a clear error
while the test process carries on; only a file that is not there is "not found".
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netplugins.build import (
    CUDA,
    DMABUF,
    HOST,
    SOURCES,
    build_fake,
    build_with_dependency,
    fake_devices,
    fake_libnccl,
    foreign_arch_copy,
    gcc,
    values_header,
)

import cordee
from cordee.interconnect.libload import LibraryNotFound, find_library
from cordee.interconnect.nccl import find_libnccl
from cordee.interconnect.netplugin.abi import ABI_VERSIONS
from cordee.interconnect.netplugin.nccl_versions import nccl_net_versions
from cordee.interconnect.netplugin.probe import NetDevice, probe_plugin, resolve_plugin
from cordee.interconnect.netplugin.resolve import PluginError, candidate_names, plugin_request

BASE_ENV = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
FORMATS_VARARGS = os.uname().machine in ("x86_64", "aarch64")

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="no C compiler (gcc) to build test plugins"
)


def expected_device(index: int, d: dict, abi: int) -> NetDevice:
    v9, v11, v12 = abi >= 9, abi >= 11, abi >= 12
    bits = (("host", HOST), ("cuda", CUDA), ("dmabuf", DMABUF))
    return NetDevice(
        index=index,
        name=d["name"],
        pci_path=d["pci"],
        guid=d["guid"],
        ptr_support=tuple(name for name, bit in bits if d["ptr"] & bit),
        reg_is_global=bool(d["reg"]),
        force_flush=bool(d["flush"]) if v9 else None,
        speed_mbps=d["speed"],
        port=d["port"],
        latency_us=d["latency"],
        max_comms=d["max_comms"],
        max_recvs=d["max_recvs"],
        net_device_type=d["type"],
        net_device_version=d["version"],
        vdevs=tuple(d["vdevs"]) if v9 else None,
        max_p2p_bytes=d["max_p2p"] if v9 else None,
        max_coll_bytes=d["max_coll"] if v9 else None,
        max_multi_request_size=d["max_mreq"] if v11 else None,
        rail_id=d["rail"] if v12 else None,
        plane_id=d["plane"] if v12 else None,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Every test plugin, each in the directory and under the name a test looks it up by."""
    root = tmp_path_factory.mktemp("netplugins")
    for abi in ABI_VERSIONS:
        build_fake(root / f"v{abi}" / "libnccl-net-fake.so", abi)
    build_fake(root / "default" / "libnccl-net.so", 9, name="default-plugin")
    build_fake(root / "both" / "fake", 8, name="bare-name")
    build_fake(root / "both" / "libnccl-net-fake.so", 8, name="prefixed-name")
    # one library exporting v8 and v10 (two translation units) and a newer v13 cordee cannot read
    objs = []
    for abi, extra in ((8, ()), (10, ("-DEXTRA_V13",))):
        header = values_header(root / f"multi{abi}.h", f"multi-v{abi}", fake_devices(abi))
        obj = root / f"multi{abi}.o"
        cmd = ["gcc", "-std=c11", "-Wall", "-Werror", "-O1", "-fPIC", f"-I{SOURCES}", f"-DABI={abi}", *extra]
        cmd += ["-include", str(header), "-c", "-o", str(obj), str(SOURCES / "fake_plugin.c")]
        subprocess.run(cmd, check=True, timeout=60)
        objs.append(str(obj))
    gcc(root / "multi" / "libnccl-net-multi.so", *objs)
    gcc(root / "bad" / "libnccl-net-crash.so", "-DABI=8", str(SOURCES / "crash_plugin.c"))
    gcc(root / "bad" / "libnccl-net-hang.so", "-DABI=8", str(SOURCES / "hang_plugin.c"))
    gcc(root / "bad" / "libnccl-net-old.so", "-DWITH_OLD", str(SOURCES / "nosym_plugin.c"))
    gcc(root / "bad" / "libnccl-net-nosym.so", str(SOURCES / "nosym_plugin.c"))
    (root / "bad" / "libnccl-net-text.so").write_text("not an ELF file\n")
    return root


def env_for(directory: Path, plugin: str | None, **extra: str) -> dict[str, str]:
    env = dict(BASE_ENV, LD_LIBRARY_PATH=str(directory), NCCL_CONF_FILE=os.devnull, **extra)
    if plugin is not None:
        env["NCCL_NET_PLUGIN"] = plugin
    return env


# --- the ABI, field by field -------------------------------------------------------------------


def test_ctypes_layouts_match_nccl_headers():
    from cordee.interconnect.netplugin import abi

    def offsets(struct):
        return {name: getattr(struct, name).offset for name, *_ in struct._fields_}

    v8, v9, v11, v12 = (offsets(abi.PROPERTIES[v]) for v in (8, 9, 11, 12))
    assert (v8["regIsGlobal"], v8["speed"], v8["latency"], v8["netDeviceVersion"]) == (28, 32, 40, 56)
    assert (v9["forceFlush"], v9["speed"], v9["latency"], v9["vProps"]) == (32, 36, 44, 64)
    assert (v9["maxP2pBytes"], v9["maxCollBytes"], v11["maxMultiRequestSize"]) == (88, 96, 104)
    assert (v12["maxP2pBytes"], v12["maxCollBytes"], v12["maxMultiRequestSize"]) == (104, 112, 120)
    assert (v12["railId"], v12["planeId"]) == (124, 126)
    sizes = {v: ctypes.sizeof(abi.PROPERTIES[v]) for v in ABI_VERSIONS}
    assert sizes == {8: 64, 9: 104, 10: 104, 11: 112, 12: 128}
    slots = {v: ctypes.sizeof(abi.net_table(v)) // ctypes.sizeof(ctypes.c_void_p) for v in ABI_VERSIONS}
    assert slots == {8: 19, 9: 20, 10: 20, 11: 22, 12: 22}
    assert abi.net_table(12).finalize.offset == 20 * ctypes.sizeof(ctypes.c_void_p)


@pytest.mark.parametrize("abi", ABI_VERSIONS)
def test_every_field_of_every_device_comes_back(built, abi):
    directory = built / f"v{abi}"
    report = probe_plugin(env_for(directory, "fake"))
    assert report.error is None and report.ok, report.error
    assert report.requested == "fake"
    assert report.candidates == ("fake", "libnccl-net-fake.so")
    assert report.path == str((directory / "libnccl-net-fake.so").resolve())
    assert report.exported == (abi,) and report.abi_version == abi
    assert report.name == f"fake-v{abi}" and report.init_result == 0
    assert report.devices == tuple(expected_device(i, d, abi) for i, d in enumerate(fake_devices(abi)))
    messages = [m["message"] for m in report.log]
    assert f"fake-v{abi} init: 3 devices, setting=(unset)" in messages
    first = report.log[0]
    assert first["level"] == "INFO" and first["file"].endswith("fake_plugin.c") and first["line"] > 0
    if abi == 10:
        assert "profiler callback NULL" in messages
    if abi >= 11:  # NCCL's defaults for an unset traffic class; finalize gets init's context back
        assert "commId 0 trafficClass -1 profiler NULL" in messages
        assert messages[-1] == "finalize with the init context"
    doc = json.loads(json.dumps(report.as_dict()))
    assert doc["schema"] == "cordee.netplugin/1" and doc["ok"] is True
    assert doc["devices"][1]["guid"] == fake_devices(abi)[1]["guid"]


@pytest.mark.skipif(
    not FORMATS_VARARGS, reason="variadic logger arguments are formatted on x86_64/aarch64 only"
)
def test_logger_formats_variadic_arguments_like_glibc(built):
    report = probe_plugin(env_for(built / "v9", "fake"))
    log = [m["message"] for m in report.log]
    # LOG_TWICE logs a format with its arguments, then glibc's snprintf of the same call, both
    # from one source line
    by_line: dict[int, list[str]] = {}
    for m in report.log:
        by_line.setdefault(m["line"], []).append(m["message"])
    pairs = [messages for messages in by_line.values() if len(messages) == 2]
    assert [p[1].split()[0] for p in pairs] == ["ints", "mixed"]
    for ours, glibc in pairs:
        assert ours == glibc
    assert pairs[1][0].startswith("mixed str 1.25 3 1.000000e-09 fake-v9 0.5 0x1000")
    # a ninth double lands on the stack among the integers: the raw format, never a wrong number
    assert "nine doubles %g %g %g %g %g %g %g %g %g" in log


def test_newest_understood_abi_is_used(built):
    report = probe_plugin(env_for(built / "multi", "multi"))
    assert report.exported == (13, 10, 8)
    assert report.abi_version == 10 and report.name == "multi-v10" and report.ok
    assert report.devices == tuple(expected_device(i, d, 10) for i, d in enumerate(fake_devices(10)))


def test_child_entry_point_prints_one_json_document(built):
    path = built / "v8" / "libnccl-net-fake.so"
    proc = subprocess.run(
        [sys.executable, "-m", "cordee.interconnect.netplugin.probe_child", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env_for(built, None, PYTHONPATH=str(Path(cordee.__file__).resolve().parents[1])),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the plugin's printf banner must not be in here
    assert doc["abi_version"] == 8 and len(doc["devices"]) == 3
    assert "fake plugin banner on stdout" in proc.stderr


# --- resolution, as NCCL does it ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value, names",
    [
        (None, ["libnccl-net.so"]),
        ("ofi", ["ofi", "libnccl-net-ofi.so"]),
        ("libnccl-net-ofi.so", ["libnccl-net-ofi.so"]),
        ("libfoo.so.1", ["libfoo.so.1", "libnccl-net-libfoo.so.1.so"]),
        ("/opt/x/libp.so", ["/opt/x/libp.so"]),
        ("a,,sub/b.so", ["a", "libnccl-net-a.so", "sub/b.so"]),
        ("none", []),
        ("NoNe", []),
        ("", []),
    ],
)
def test_candidate_names_follow_nccl(value, names):
    assert candidate_names(value) == names


def test_unset_loads_libnccl_net_so(built):
    requested, candidates, path = resolve_plugin(env_for(built / "default", None))
    assert (requested, candidates) == (None, ["libnccl-net.so"])
    assert path == str((built / "default" / "libnccl-net.so").resolve())
    report = probe_plugin(env_for(built / "default", None))
    assert report.name == "default-plugin" and report.ok


def test_bare_name_is_tried_before_libnccl_net_x(built):
    both = built / "both"
    assert probe_plugin(env_for(both, "fake")).name == "bare-name"
    only_prefixed = built / "only-prefixed"
    only_prefixed.mkdir(exist_ok=True)
    shutil.copy(both / "libnccl-net-fake.so", only_prefixed)
    assert probe_plugin(env_for(only_prefixed, "fake")).name == "prefixed-name"
    report = probe_plugin(env_for(both, "libnccl-net-fake.so"))  # a lib*.so name is used as is
    assert report.candidates == ("libnccl-net-fake.so",) and report.name == "prefixed-name"


def test_paths_and_lists(built, monkeypatch):
    target = built / "v12" / "libnccl-net-fake.so"
    assert probe_plugin(env_for(built, str(target))).abi_version == 12
    monkeypatch.chdir(built)
    report = probe_plugin(env_for(built / "nowhere", "v9/libnccl-net-fake.so"))  # relative to the cwd
    assert report.abi_version == 9 and report.path == str((built / "v9" / "libnccl-net-fake.so").resolve())
    report = probe_plugin(env_for(built / "v10", "missing,fake"))
    assert report.candidates == ("missing", "libnccl-net-missing.so", "fake", "libnccl-net-fake.so")
    assert report.abi_version == 10
    assert probe_plugin(env_for(built, None), path=str(target)).abi_version == 12


def test_nothing_found_names_what_was_tried(built):
    report = probe_plugin(env_for(built / "v8", "nothere"))
    assert report.error == "no plugin found (tried: nothere, libnccl-net-nothere.so)"
    assert report.path is None and report.not_found and not report.ok
    assert resolve_plugin(env_for(built / "v8", "nothere"))[2] is None


@pytest.mark.parametrize("value", ["none", "NONE", ""])
def test_none_disables_the_plugin(value):
    report = probe_plugin(dict(BASE_ENV, NCCL_NET_PLUGIN=value, NCCL_CONF_FILE=os.devnull))
    assert report.disabled and not report.ok and report.candidates == ()
    assert report.error.startswith("disabled: NCCL_NET_PLUGIN=")
    assert resolve_plugin(dict(BASE_ENV, NCCL_NET_PLUGIN=value)) == (value, [], None)


def test_missing_path_is_bad_input(built, tmp_path):
    with pytest.raises(
        PluginError, match=r"NCCL_NET_PLUGIN='/does/not/exist': /does/not/exist does not exist"
    ):
        probe_plugin(env_for(built, "/does/not/exist"))
    with pytest.raises(PluginError):
        resolve_plugin(env_for(built, "fake,/does/not/exist"))
    with pytest.raises(PluginError):
        plugin_request(env_for(built, "./does/not/exist.so"))
    assert plugin_request(env_for(built, "fake")) == ("fake", ["fake", "libnccl-net-fake.so"])
    with pytest.raises(PluginError, match="net plugin path: /does/not/exist"):
        probe_plugin(env_for(built, None), path="/does/not/exist")
    conf = tmp_path / "nccl.conf"
    conf.write_text("NCCL_NET_PLUGIN=./gone/libx.so\n")
    with pytest.raises(PluginError, match=f"set in {conf}"):
        probe_plugin(dict(BASE_ENV, NCCL_CONF_FILE=str(conf)))


def test_nccl_conf_file_fills_in_what_the_environment_does_not_set(built, tmp_path):
    conf = tmp_path / "nccl.conf"
    conf.write_text("# comment\nNCCL_NET_PLUGIN=fake\nFAKE_NET_SETTING=from-conf\n")
    env = dict(BASE_ENV, LD_LIBRARY_PATH=str(built / "v11"), NCCL_CONF_FILE=str(conf))
    report = probe_plugin(env)
    assert report.requested == "fake" and report.abi_version == 11
    assert "fake-v11 init: 3 devices, setting=from-conf" in [m["message"] for m in report.log]
    report = probe_plugin(dict(env, FAKE_NET_SETTING="from-env"))  # the environment wins
    assert "fake-v11 init: 3 devices, setting=from-env" in [m["message"] for m in report.log]


def test_parent_environment_is_left_alone(built):
    before = dict(os.environ)
    report = probe_plugin(env_for(built / "v8", "fake", FAKE_NET_SETTING="x"))
    assert report.ok and dict(os.environ) == before


# --- plugins that misbehave ------------------------------------------------------------------


def bad_env(built: Path, plugin: str, **extra: str) -> dict[str, str]:
    return env_for(built / "bad", plugin, **extra)


@pytest.mark.parametrize(
    "phase, how, error",
    [
        ("init", "segv", "crashed in init (SIGSEGV)"),
        ("devices", "abort", "crashed in devices (SIGABRT)"),
        ("getProperties", "exit", "exited with status 3 in getProperties(dev 1)"),
    ],
)
def test_crash_is_reported_and_cordee_carries_on(built, phase, how, error):
    report = probe_plugin(bad_env(built, "crash", CRASH_PHASE=phase, CRASH_HOW=how))
    assert report.error == error and not report.ok
    assert report.abi_version == 8 and report.name == "crash"
    assert report.log[-1]["message"] == f"about to die in {phase}"  # logged before it died
    if phase == "getProperties":
        assert [d.name for d in report.devices] == ["crash0"]  # device 0 was read before the crash


def test_crash_while_loading(built):
    report = probe_plugin(bad_env(built, "crash", CRASH_PHASE="load"))
    assert report.error == "crashed in dlopen of libnccl-net-crash.so (SIGSEGV)"  # "crash" itself: ENOENT
    assert report.path is None and report.abi_version is None and not report.not_found


def test_hang_is_killed_at_the_timeout_with_its_process_group(built, tmp_path):
    pidfile = tmp_path / "helper.pid"
    start = time.monotonic()
    report = probe_plugin(bad_env(built, "hang", HANG_PIDFILE=str(pidfile)), timeout=1.5)
    assert time.monotonic() - start < 10
    assert report.error == "init did not return within 1.5 s"
    assert report.log[0]["message"].startswith("hanging in init, helper pid ")
    helper = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{helper}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":  # killed, waiting for its new parent to reap it
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"helper process {helper} forked by the plugin survived the timeout")


@pytest.mark.parametrize(
    "plugin, error, exported",
    [
        ("old", "exports no ncclNetPlugin_v12..v8 symbol (found: v6, v7)", (7, 6)),
        ("nosym", "exports no ncclNetPlugin_v12..v8 symbol (found: none)", ()),
    ],
)
def test_no_known_symbol(built, plugin, error, exported):
    report = probe_plugin(bad_env(built, plugin))
    assert report.error == error and report.exported == exported
    assert report.path == str((built / "bad" / f"libnccl-net-{plugin}.so").resolve())
    assert report.abi_version is None and report.init_result is None


def test_init_failure_code(built):
    report = probe_plugin(env_for(built / "v10", "fake", FAKE_NET_INIT_RC="2"))
    assert report.error == "init returned 2 (ncclSystemError)"
    assert report.init_result == 2 and report.devices == () and not report.ok


def test_file_that_is_not_a_library(built):
    report = probe_plugin(bad_env(built, "text"))
    path = built / "bad" / "libnccl-net-text.so"
    assert report.error.startswith(f"could not load {path.resolve()}: it is not an ELF shared library")
    assert "; the loader says: " in report.error  # glibc's own words stay in the report
    assert report.path is None and not report.not_found and not report.ok


# --- a plugin file that exists but does not load is not "not found" ---------------------------


@pytest.fixture(scope="module")
def with_dependency(tmp_path_factory) -> tuple[Path, Path]:
    """(directory of libnccl-net-dep.so, directory of the libcordeetestdep.so it is linked to)."""
    root = tmp_path_factory.mktemp("dependency")
    plugin = build_with_dependency(root / "plugin", root / "dep")
    return plugin.parent, root / "dep"


def test_plugin_loads_when_its_dependency_is_on_the_library_path(with_dependency):
    plugin_dir, dep_dir = with_dependency
    report = probe_plugin(dict(env_for(plugin_dir, "dep"), LD_LIBRARY_PATH=f"{plugin_dir}:{dep_dir}"))
    assert report.ok and report.name == "needs-dep", report.error
    assert "libcordeetestdep says 42" in [m["message"] for m in report.log]


@pytest.mark.parametrize("by", ["name", "path"])
def test_missing_dependency_is_a_load_error_naming_the_library(with_dependency, by):
    plugin_dir, _ = with_dependency
    plugin = (plugin_dir / "libnccl-net-dep.so").resolve()
    env = env_for(plugin_dir, "dep" if by == "name" else str(plugin))
    report = probe_plugin(env)
    assert not report.not_found and report.path is None and not report.ok
    assert report.error == (
        f"could not load {plugin}: it needs libcordeetestdep.so, which the dynamic linker does not find "
        "(LD_LIBRARY_PATH, ld.so cache, system dirs); the loader says: libcordeetestdep.so: cannot "
        "open shared object file: No such file or directory"
    )


@pytest.mark.parametrize("by", ["name", "path"])
def test_plugin_for_another_machine_is_a_load_error(built, tmp_path, by):
    copy, other = foreign_arch_copy(built / "v9" / "libnccl-net-fake.so", tmp_path / "libnccl-net-foreign.so")
    report = probe_plugin(env_for(tmp_path, "foreign" if by == "name" else str(copy)))
    here = os.uname().machine
    assert not report.not_found and report.path is None and not report.ok
    assert report.error.startswith(
        f"could not load {copy.resolve()}: it is built for {other} 64-bit, this process is {here} 64-bit"
    )
    # glibc itself only says "No such file or directory" (as for a file that is not there)
    assert "cannot open shared object file" in report.error


# --- the ABI version NCCL itself would use --------------------------------------------------------


def test_nccl_net_versions_from_rodata_equal_a_scan_of_the_whole_library():
    wheel = find_libnccl({}).path  # the nvidia-nccl wheel's libnccl.so.2 (450 MB, mostly GPU code)
    with open(wheel, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        everywhere = {int(v) for v in re.findall(rb"ncclNetPlugin_v(\d+)\x00", data)}
    versions = nccl_net_versions(wheel)
    assert versions == tuple(sorted(everywhere, reverse=True)) and 8 in versions  # NCCL >= 2.19: v8


@pytest.fixture(scope="module")
def nccl_up_to_v11(tmp_path_factory) -> Path:
    """A libnccl that looks for ncclNetPlugin_v11..v6, as NCCL 2.28 does."""
    path = fake_libnccl(tmp_path_factory.mktemp("nccl-v11") / "libnccl.so.2", newest=11)
    assert nccl_net_versions(str(path)) == (11, 10, 9, 8, 7, 6)
    return path


def test_plugin_newer_than_nccl_is_one_nccl_would_not_load(built, nccl_up_to_v11):
    report = probe_plugin(env_for(built / "v12", "fake"), nccl=str(nccl_up_to_v11))
    assert report.error == (
        f"the plugin exports v12, the NCCL in {nccl_up_to_v11} looks for v11..v6: NCCL would not load "
        "it and would use its internal transports"
    )
    assert report.nccl_versions == (11, 10, 9, 8, 7, 6) and report.exported == (12,)
    assert report.abi_version is None and report.init_result is None and not report.ok
    assert probe_plugin(env_for(built / "v11", "fake"), nccl=str(nccl_up_to_v11)).abi_version == 11


def test_plugin_is_read_through_the_abi_nccl_would_use(built, tmp_path):
    nccl = fake_libnccl(tmp_path / "libnccl.so.2", newest=9)
    report = probe_plugin(env_for(built / "multi", "multi"), nccl=str(nccl))  # exports v13, v10, v8
    assert report.ok and report.abi_version == 8 and report.name == "multi-v8"
    assert report.devices == tuple(expected_device(i, d, 8) for i, d in enumerate(fake_devices(8)))
    unknown = tmp_path / "not-nccl.so"  # names no version: which ones NCCL takes is not known
    gcc(unknown, str(SOURCES / "nosym_plugin.c"))
    report = probe_plugin(env_for(built / "multi", "multi"), nccl=str(unknown))
    assert report.nccl_versions is None and report.abi_version == 10


def test_garbage_from_the_child_is_an_error_not_an_exception(built, monkeypatch):
    from cordee.interconnect.netplugin import probe

    monkeypatch.setattr(probe, "PROBE_MODULE", "this")  # prints the Zen of Python, exits 0
    report = probe_plugin(env_for(built / "v8", "fake"))
    assert report.error.startswith("probe printed no valid JSON: 'The Zen of Python")


# --- real NCCL loads the same plugins (GPU only) ---------------------------------------------

NEEDS_GPU = pytest.mark.skipif(
    not os.path.exists("/dev/nvidia0"), reason="no NVIDIA GPU: NCCL loads net plugins only in comm init"
)
NCCL_ONE_RANK = """
import ctypes, sys
nccl = ctypes.CDLL(sys.argv[1])
class UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * 128)]
version, uid, comm = ctypes.c_int(), UniqueId(), ctypes.c_void_p()
nccl.ncclGetVersion(ctypes.byref(version))
assert nccl.ncclGetUniqueId(ctypes.byref(uid)) == 0
rc = nccl.ncclCommInitRank(ctypes.byref(comm), 1, uid, 0)
print("NCCL version", version.value, "ncclCommInitRank", rc, flush=True)
if rc == 0:
    nccl.ncclCommDestroy(comm)
"""


def _libnccl() -> str | None:
    """NCCL as a job would get it (a path): CORDEE_TEST_LIBNCCL, the system's, else the nvidia wheel's."""
    if os.environ.get("CORDEE_TEST_LIBNCCL"):
        return os.environ["CORDEE_TEST_LIBNCCL"]
    try:
        return find_library("libnccl.so.2", override_var=None).path  # the dynamic linker's
    except LibraryNotFound:
        pass
    try:
        import nvidia.nccl
    except ImportError:
        return None
    wheel = os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2")
    return wheel if os.path.exists(wheel) else None


def _require_libnccl() -> str:
    libnccl = _libnccl()
    assert libnccl, (
        "no libnccl.so.2 (CORDEE_TEST_LIBNCCL, the system's, the nvidia-nccl wheel) on a GPU machine"
    )
    return libnccl


def _real_pci_paths(count: int) -> list[str]:
    """Existing PCI functions, so that NCCL's topology code can place the fake NICs."""
    root = Path("/sys/bus/pci/devices")
    paths = []
    for dev in sorted(root.iterdir()) if root.is_dir() else []:
        pci_class = (dev / "class").read_text().strip()
        if not pci_class.startswith(("0x03", "0x0604")):  # not a GPU, not a bridge
            paths.append(os.path.realpath(dev))
    return paths[:count] if len(paths) >= count else []


def nccl_view(libnccl: str, env: dict[str, str], tmp_path: Path) -> tuple[str, dict[int, dict]]:
    """NCCL's own log and the <net> nodes of its topology dump, for a one-rank communicator."""
    dump = tmp_path / "topo.xml"
    env = dict(env, NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="ALL", NCCL_TOPO_DUMP_FILE=str(dump))
    for name in ("CUDA_VISIBLE_DEVICES", "NCCL_NVLS_ENABLE"):  # the machine's GPU choice and NCCL safety
        if name in os.environ:
            env[name] = os.environ[name]
    proc = subprocess.run(
        [sys.executable, "-c", NCCL_ONE_RANK, libnccl], capture_output=True, text=True, timeout=120, env=env
    )
    import xml.etree.ElementTree as ET

    nets = {}
    if dump.exists():
        for node in ET.parse(dump).iter("net"):
            nets[int(node.get("dev"))] = dict(node.attrib)
    return f"{proc.stdout}{proc.stderr}\nexit status {proc.returncode}", nets


def _nccl_message(log: str, start: str) -> str:
    """The text of NCCL's own rendering of a plugin message that starts with `start`."""
    for line in log.splitlines():
        for level in (" NCCL INFO ", " NCCL WARN "):
            if level in line and line.split(level, 1)[1].startswith(start):
                return line.split(level, 1)[1]
    raise AssertionError(f"NCCL did not log a message starting {start!r}:\n{log[-3000:]}")


@pytest.mark.gpu
@NEEDS_GPU
@pytest.mark.parametrize("abi", ABI_VERSIONS)
def test_real_nccl_reads_the_plugin_as_cordee_does(tmp_path, abi):
    libnccl = _require_libnccl()
    pci = _real_pci_paths(3)
    assert pci, "fewer than 3 non-GPU PCI functions in /sys/bus/pci/devices to place the fake NICs at"
    devices = fake_devices(abi)
    for d, path in zip(devices, pci, strict=True):
        d.update(pci=path, type=0)  # NCCL places NICs by PCI path; type 0 = no device offload
    lib = tmp_path / "lib" / "libnccl-net-fake.so"
    header = values_header(tmp_path / "values.h", f"fake-v{abi}", devices)
    gcc(lib, f"-DABI={abi}", "-include", str(header), str(SOURCES / "fake_plugin.c"))
    env = env_for(lib.parent, "fake")
    ours = probe_plugin(env, nccl=libnccl)
    log, nets = nccl_view(libnccl, env, tmp_path)
    # cordee says whether this NCCL loads the plugin (the versions it looks for); NCCL must agree,
    # whichever way: a disagreement fails, it is never a reason to skip
    cordee_loads = ours.nccl_versions is None or abi in ours.nccl_versions
    nccl_loaded = f"fake-v{abi} init" in log
    assert nccl_loaded == cordee_loads, f"{ours.nccl_versions=} {ours.error=}\n{log[-3000:]}"
    if not cordee_loads:
        assert ours.error.endswith("NCCL would not load it and would use its internal transports")
        return
    assert ours.ok and ours.abi_version == abi, ours.error
    assert "ncclCommInitRank 0" in log, log[-3000:]
    for start in ("ints ", "mixed "):  # NCCL's printf of the plugin's log call equals cordee's
        assert _nccl_message(log, start) in [m["message"] for m in ours.log]
    assert len(nets) == len(ours.devices), nets
    for dev in ours.devices:
        net = nets[dev.index]
        assert (
            net["name"] == dev.name and int(net["speed"]) == dev.speed_mbps and int(net["port"]) == dev.port
        )
        assert int(net["guid"], 0) == dev.guid and int(net["maxconn"]) == dev.max_comms
        assert int(float(net["latency"])) == int(dev.latency_us)
        if "cuda" in dev.ptr_support or "dmabuf" not in dev.ptr_support:
            assert int(net["gdr"]) == ("cuda" in dev.ptr_support)
        if abi >= 12 and "rail" in net:
            assert (int(net["rail"]), int(net.get("plane", -1))) == (dev.rail_id, dev.plane_id)


@pytest.mark.gpu
@NEEDS_GPU
@pytest.mark.parametrize(
    "directory, plugin", [("both", "fake"), ("only-prefixed", "fake"), ("default", None), ("both", "none")]
)
def test_real_nccl_resolves_the_same_file(built, tmp_path, directory, plugin):
    libnccl = _require_libnccl()
    if directory == "only-prefixed":
        (built / directory).mkdir(exist_ok=True)
        shutil.copy(built / "both" / "libnccl-net-fake.so", built / directory)
    env = env_for(built / directory, plugin)
    ours = probe_plugin(env)
    log, _ = nccl_view(libnccl, env, tmp_path)
    loaded = {name for name in ("bare-name", "prefixed-name", "default-plugin") if f"{name} init:" in log}
    assert loaded == ({ours.name} if ours.name else set()), log[-3000:]
    assert ours.disabled == (plugin == "none")
