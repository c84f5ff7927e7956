"""Build the test net plugins with gcc: the fake plugin for any ABI with property values chosen
by the test, a plugin linked against a library of its own (to leave off the library path), a
copy of a plugin that claims another machine in its ELF header, and a stand-in libnccl that
looks for net plugin versions up to a chosen one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

SOURCES = Path(__file__).resolve().parent
HOST, CUDA, DMABUF = 1, 2, 4  # NCCL_PTR_*
DEP_LIB = "libcordeetestdep.so"
E_MACHINE_OFFSET = 18  # Elf64_Ehdr.e_machine; both ELF classes have it here
E_MACHINE = {"x86_64": 62, "aarch64": 183}


def fake_devices(abi: int) -> list[dict]:
    """Distinct values per ABI and per device, edge cases included (top guid bit, NULL pciPath,
    negative rail id, size_t beyond 2**63, host-only pointers on device 1, none for host on device 2)."""
    vmax = 8 if abi >= 12 else 4
    return [
        dict(
            name=f"fake-v{abi}-dev0",
            pci=f"/sys/devices/pci0000:{abi:02x}/0000:{abi:02x}:00.0",
            guid=0x0123456789ABCDEF ^ abi,
            ptr=HOST | CUDA | DMABUF,
            reg=1,
            flush=1,
            speed=200000 + abi,
            port=1,
            latency=1.25,
            max_comms=65536 + abi,
            max_recvs=8,
            type=0,
            version=0,
            vdevs=[0],
            max_p2p=(1 << 31) + abi,
            max_coll=(1 << 40) + abi,
            max_mreq=abi,
            rail=abi,
            plane=0,
        ),
        dict(
            name=f"fake-v{abi}-dev1",
            pci=None,
            guid=0xFFFFFFFFFFFFFF00 + abi,
            ptr=HOST,
            reg=0,
            flush=0,
            speed=400000,
            port=2 + abi,
            latency=0.5,
            max_comms=1,
            max_recvs=1,
            type=1,
            version=7 + abi,
            vdevs=list(range(1, vmax + 1)),
            max_p2p=(1 << 64) - 1 - abi,
            max_coll=abi,
            max_mreq=0,
            rail=-1,
            plane=32767,
        ),
        dict(
            name=f"fake-v{abi}-dev2",
            pci=f"/sys/devices/pci0000:00/0000:00:{abi:02x}.1",
            guid=abi,
            ptr=CUDA | DMABUF,
            reg=1,
            flush=0,
            speed=25000,
            port=0,
            latency=17.5 + abi,
            max_comms=2 * abi,
            max_recvs=abi,
            type=0,
            version=abi,
            vdevs=[],
            max_p2p=0,
            max_coll=1,
            max_mreq=1 << 20,
            rail=-32768,
            plane=-3,
        ),
    ]


def _c_string(value: str | None) -> str:
    return "0" if value is None else json.dumps(value)


def values_header(path: Path, plugin_name: str, devices: list[dict]) -> Path:
    """PLUGIN_NAME and FAKE_DEVICES for fake_plugin.c, from the test's own values."""
    items = []
    for d in devices:
        vdevs = "{" + ", ".join(map(str, d["vdevs"] or [0])) + "}"
        items.append(
            f"{{.name = {_c_string(d['name'])}, .pci = {_c_string(d['pci'])}, .guid = {d['guid']}ULL, "
            f".ptr = {d['ptr']}, .reg = {d['reg']}, .flush = {d['flush']}, .speed = {d['speed']}, "
            f".port = {d['port']}, .latency = {d['latency']!r}f, .max_comms = {d['max_comms']}, "
            f".max_recvs = {d['max_recvs']}, .type = {d['type']}, .version = {d['version']}, "
            f".vndevs = {len(d['vdevs'])}, .vdevs = {vdevs}, .max_p2p = {d['max_p2p']}ULL, "
            f".max_coll = {d['max_coll']}ULL, .max_mreq = {d['max_mreq']}, .rail = {d['rail']}, "
            f".plane = {d['plane']}}}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#define PLUGIN_NAME {json.dumps(plugin_name)}\n#define FAKE_DEVICES {{{', '.join(items)}}}\n"
    )
    return path


def gcc(out: Path, *sources_and_flags: str) -> Path:
    """A shared library from C sources (the last arguments; libraries to link come after them)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-shared", "-fPIC", f"-I{SOURCES}"]
    subprocess.run([*cmd, "-o", str(out), *sources_and_flags], check=True, timeout=60)
    return out


def build_fake(
    out: Path, abi: int, name: str | None = None, extra: tuple[str, ...] = (), libs: tuple[str, ...] = ()
) -> Path:
    """fake_plugin.c for `abi`; its values header goes beside the library's directory, not in it
    (the probe searches that directory)."""
    headers = out.parent.parent / "headers"
    header = values_header(
        headers / f"{out.parent.name}-{out.name}.h", name or f"fake-v{abi}", fake_devices(abi)
    )
    return gcc(out, f"-DABI={abi}", "-include", str(header), *extra, str(SOURCES / "fake_plugin.c"), *libs)


def build_with_dependency(plugin_dir: Path, dep_dir: Path, abi: int = 10) -> Path:
    """libnccl-net-dep.so in plugin_dir, linked against libcordeetestdep.so in dep_dir (and
    calling into it), as aws-ofi-nccl is linked against libfabric."""
    gcc(dep_dir / DEP_LIB, str(SOURCES / "dep_lib.c"))
    out = plugin_dir / "libnccl-net-dep.so"
    return build_fake(
        out, abi, name="needs-dep", extra=("-DWITH_DEP",), libs=(f"-L{dep_dir}", "-lcordeetestdep")
    )


def fake_libnccl(out: Path, newest: int) -> Path:
    """A libnccl.so.2 stand-in whose .rodata names ncclNetPlugin_v<newest> .. v6 (fake_libnccl.c)."""
    return gcc(out, f"-DNEWEST={newest}", str(SOURCES / "fake_libnccl.c"))


def foreign_arch_copy(plugin: Path, out: Path) -> tuple[Path, str]:
    """A copy of `plugin` whose ELF header claims the other of x86_64/aarch64: what a plugin built
    for another machine looks like to the dynamic linker. Returns (copy, the machine it claims)."""
    here = os.uname().machine
    other = "aarch64" if here != "aarch64" else "x86_64"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plugin, out)
    with open(out, "r+b") as f:
        f.seek(E_MACHINE_OFFSET)
        f.write(E_MACHINE[other].to_bytes(2, "little"))
    return out, other
