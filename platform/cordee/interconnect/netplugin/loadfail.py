"""Why a plugin name did not load: no such file, or a file that exists and does not load.

NCCL treats only a missing file as "not found" (then it quietly uses its internal transports);
a file that is there and fails to load is a broken installation: a library it needs is missing
from the library path (aws-ofi-nccl without libfabric), it is built for another machine, or it
is not a shared library at all. glibc's dlerror says "No such file or directory" for a missing
dependency and for an ELF file of another architecture too, so the answer comes from looking for
the file the way the dynamic linker does, and from the file's ELF header, not from the message.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import NamedTuple

from cordee.interconnect.libload import LibraryNotFound, find_library

ELF_MAGIC = b"\x7fELF"
# e_machine values (elf.h) of the machines a plugin may have been built for
MACHINES = {
    3: "i386",
    20: "ppc",
    21: "ppc64",
    22: "s390x",
    40: "arm",
    62: "x86_64",
    183: "aarch64",
    243: "riscv",
}
NO_FILE = "cannot open shared object file"


class LoadFailure(NamedTuple):
    name: str  # as handed to dlopen
    path: str | None  # the file that name denotes; None: there is none (NCCL's ENOENT)
    loader_message: str  # dlerror()

    def describe(self) -> str:
        """PATH: why; the loader says: MESSAGE, or PATH: MESSAGE when the message is clear."""
        reason = _missing_dependency(self) or _elf_mismatch(self.path)
        if reason is None:
            return f"{self.path}: {self.loader_message}"
        return f"{self.path}: {reason}; the loader says: {self.loader_message}"


def load_failure(name: str, loader_message: str, environ: Mapping[str, str] = os.environ) -> LoadFailure:
    return LoadFailure(name, locate(name, environ), loader_message)


def locate(name: str, environ: Mapping[str, str]) -> str | None:
    """The file dlopen(name) would open, ignoring whether it can: a path as given, a bare name on
    LD_LIBRARY_PATH, the ld.so cache and the standard directories (libload's order)."""
    if "/" in name:
        return os.path.realpath(name) if os.path.exists(name) else None
    try:
        return find_library(name, override_var=None, environ=environ).path
    except LibraryNotFound:
        return None


def _missing_dependency(failure: LoadFailure) -> str | None:
    """For "libdep.so: cannot open shared object file: ...", where libdep.so is not the plugin."""
    obj, sep, rest = failure.loader_message.partition(": ")
    plugin_names = {failure.name, os.path.basename(failure.name), failure.path}
    if not sep or not rest.startswith(NO_FILE) or obj in plugin_names:
        return None
    return (
        f"it needs {obj}, which the dynamic linker does not find (LD_LIBRARY_PATH, ld.so cache, system dirs)"
    )


def _elf_ident(path: str) -> tuple[int, int, int] | None:
    """(ELF class, byte order, e_machine) of a file, or None when it is not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != ELF_MAGIC:
        return None
    order = "big" if head[5] == 2 else "little"
    return head[4], head[5], int.from_bytes(head[18:20], order)


def _arch(ident: tuple[int, int, int]) -> str:
    elf_class, order, machine = ident
    bits = {1: "32-bit", 2: "64-bit"}.get(elf_class, f"ELF class {elf_class}")
    return f"{MACHINES.get(machine, f'e_machine {machine}')} {bits}{', big-endian' if order == 2 else ''}"


def _elf_mismatch(path: str) -> str | None:
    """Why the file cannot be this process's shared library, when its header says so."""
    try:
        theirs = _elf_ident(path)
        ours = _elf_ident("/proc/self/exe" if os.path.exists("/proc/self/exe") else sys.executable)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if theirs is None:
        return "it is not an ELF shared library"
    if ours is not None and theirs != ours:
        return f"it is built for {_arch(theirs)}, this process is {_arch(ours)}"
    return None
