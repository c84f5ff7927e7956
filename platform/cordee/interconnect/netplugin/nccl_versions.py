"""Which ncclNetPlugin_vN symbols a libnccl looks for, read from the file without loading it.

NCCL tries dlsym(plugin, "ncclNetPlugin_vN") for each version it was built with, newest first;
a plugin that exports only newer versions is not loaded, and NCCL quietly uses its internal
transports (NCCL 2.28 has no v12, for one). The names are string literals in the library's
.rodata, so reading them there gives that list for any NCCL, with no table of releases to keep.
Only .rodata is read (under 1 MB of a 450 MB libnccl.so.2); the whole file only when .rodata
has none of the names.
"""

from __future__ import annotations

import mmap
import os
import re
import struct

_SYMBOL = re.compile(rb"ncclNetPlugin_v(\d+)\x00")
_ELF64_LE = b"\x7fELF\x02\x01"  # 64-bit, little-endian: the machines NCCL ships for


def _rodata(data) -> tuple[int, int] | None:
    """(offset, size) of .rodata from the ELF section headers, or None."""
    if data[:6] != _ELF64_LE:
        return None
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if not shoff or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
        return None

    def section(index: int) -> tuple[int, int, int]:  # (name offset, file offset, size)
        base = shoff + index * shentsize
        (name,) = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, names_at, names_size = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if name < names_size and data[names_at + name : names_at + name + 8] == b".rodata\x00":
            return offset, size
    return None


def nccl_net_versions(libnccl: str) -> tuple[int, ...]:
    """The ncclNetPlugin_vN versions `libnccl` looks for, newest first; () if it names none.

    Raises OSError when the file cannot be read."""
    with open(libnccl, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return ()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            where = _rodata(data)
            found = _SYMBOL.findall(data[where[0] : where[0] + where[1]]) if where else []
            if not found:  # no .rodata, or the names live elsewhere in this build
                found = _SYMBOL.findall(data)
    return tuple(sorted({int(v) for v in found}, reverse=True))
