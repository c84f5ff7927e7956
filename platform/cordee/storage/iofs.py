"""Facts about the filesystem under a path, page-cache dropping, and phases bounded by a timeout
(the pieces of `cordee io bench`).

Pages are dropped with posix_fadvise(POSIX_FADV_DONTNEED) after an fsync, one file at a time: it
needs no root and touches only the bench's own files (writing /proc/sys/vm/drop_caches would
drop every user's cache on a shared node). The kernel cannot drop pages of a memory filesystem
(tmpfs, ramfs: the page cache is the storage), and a filesystem may ignore the advice; so a
probe file is dropped first and its resident pages counted with mincore(2): where they stayed,
the figures say the cache was warm.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from cordee.errors import EXIT_UNKNOWN, CordeeError, InputError, shown

NOT_DROPPABLE = {"tmpfs", "ramfs", "devtmpfs"}  # memory filesystems; others are probed


def mount_of(path: str):
    """The mount holding `path` (type, source, mount point: storage.mounts reads mountinfo)."""
    from cordee.storage.mounts import Mount, mount_of, read_mounts

    try:
        return mount_of(path, read_mounts()) or Mount("?", "unknown", "?")
    except OSError:
        return Mount("?", "unknown", "?")


def undroppable(fstype: str) -> str | None:
    """Why the page cache of files on `fstype` cannot be dropped, or None when fadvise drops it."""
    return f"page cache: not droppable on {fstype}" if fstype in NOT_DROPPABLE else None


def resident_fraction(path: str) -> float | None:
    """The share of the file's pages in the page cache (mmap + mincore(2)); None where unknown."""
    import ctypes
    import mmap

    size = os.path.getsize(path)
    if not size:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    c_int, c_size = ctypes.c_int, ctypes.c_size_t
    libc.mmap.argtypes = [ctypes.c_void_p, c_size, c_int, c_int, c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    pages = -(-size // mmap.PAGESIZE)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            return sum(b & 1 for b in vec) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def probe_drop(directory: str, fstype: str) -> str | None:
    """Why pages cannot be dropped under `directory`, or None when fadvise dropped a probe file's."""
    known = undroppable(fstype)
    if known:
        return known
    probe = os.path.join(directory, "drop-probe.bin")
    with open(probe, "wb") as f:
        f.write(os.urandom(1 << 20))
    try:
        drop_file(probe)
        left = resident_fraction(probe)
    finally:
        os.unlink(probe)
    if left is not None and left > 0.5:
        return f"page cache: not droppable on {fstype} ({left:.0%} of a probe stayed cached after fadvise)"
    return None


def drop_pages(fd: int) -> None:
    """Write back, then ask the kernel to forget the file's cached pages (dirty pages would stay)."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def drop_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        drop_pages(fd)
    finally:
        os.close(fd)


def space(path: str) -> dict:
    st = os.statvfs(path)
    return {
        "free_bytes": st.f_bavail * st.f_frsize,
        "total_bytes": st.f_blocks * st.f_frsize,
        "free_inodes": st.f_favail if st.f_files else None,  # 0 inodes: the filesystem has no limit
    }


class Stalled(CordeeError):
    """A phase's I/O did not finish within its timeout: the filesystem is stalled or far too slow."""

    exit_code = EXIT_UNKNOWN


class Cancelled(Exception):
    """Raised inside an abandoned phase at its next check, so its thread stops touching files."""


class Bounded:
    """Runs each phase's I/O in a daemon thread and waits at most `timeout_s` for it.

    A call stuck in the kernel (a hung NFS or Lustre server) cannot be interrupted from Python;
    signal.alarm would only run its handler after that call returns. So the main thread stops
    waiting, raises Stalled (exit 3) and leaves the thread behind; the thread, if it ever comes
    back, sees the cancel flag at its next `check()` and ends. Ctrl-C reaches the main thread,
    which only waits."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.cancel = threading.Event()

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled

    def __call__(self, what: str, fn: Callable[[], object], timeout_s: float | None = None):
        box: dict = {}

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the main thread
                box["error"] = e

        limit = self.timeout_s if timeout_s is None else timeout_s
        worker = threading.Thread(target=work, name=f"io-{what}", daemon=True)
        worker.start()
        try:
            worker.join(limit)
        except BaseException:  # Ctrl-C: let the thread stop before the scratch directory goes
            self.cancel.set()
            worker.join(min(limit, 5.0))
            raise
        if worker.is_alive():
            self.cancel.set()
            raise Stalled(f"io bench: {what} did not finish within {limit:g} s (a stalled filesystem?)")
        error = box.get("error")
        if isinstance(error, OSError):  # ENOSPC mid-run, a file removed under us: one line, no traceback
            where = f" {shown(error.filename)}" if error.filename else ""
            kind = InputError if error.errno in (errno.ENOSPC, errno.EDQUOT) else CordeeError
            raise kind(f"io bench: {what}:{where} {error.strerror or error}") from None
        if error is not None:
            raise error
        return box.get("value")
