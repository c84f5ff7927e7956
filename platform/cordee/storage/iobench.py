"""`cordee io bench PATH`: the I/O a training job does, measured on the filesystem under PATH.

Figures (each with value, unit, operations, seconds and how the page cache was handled):
metadata (create, stat, open+read of small files), sequential write (fsync timed) and read,
random reads of loader sizes, the same small files read from a squashfs image against the tree
(the ratio), and, when launched with several ranks, every rank writing its checkpoint shard at
once. All of it happens in a scratch directory in PATH, removed at the end (also on failure and
Ctrl-C) unless `keep`. Each phase's I/O is bounded by `timeout_s` (iofs.Bounded).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import tempfile
from typing import NamedTuple

from cordee.errors import CordeeError, InputError, shown
from cordee.launch.launchenv import LaunchEnv
from cordee.storage import iockpt, iofs, iometa, iothroughput

SCHEMA = "cordee.io/1"
DEFAULT = {"files": 10_000, "size": 512 << 20}
QUICK = {"files": 500, "size": 16 << 20}
MARGIN = 64 << 20  # the image, directories, the results: more than they need
CLEANUP_S = 120.0


class Settings(NamedTuple):
    files: int
    size: int  # bytes of the sequential file and of each rank's checkpoint shard
    quick: bool
    timeout_s: float
    keep: bool


def settings(*, files: int | None, size: int | None, quick: bool, timeout_s: float, keep: bool) -> Settings:
    base = QUICK if quick else DEFAULT
    return Settings(files or base["files"], size or base["size"], quick, timeout_s, keep)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def check_path(path: str, s: Settings, launch: LaunchEnv) -> dict:
    """PATH exists, is a directory we may write into, with room for the bench: else InputError."""
    if not os.path.exists(path):
        raise InputError(f"io bench: {shown(path)} does not exist")
    if not os.path.isdir(path):
        raise InputError(f"io bench: {shown(path)} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"io bench: {shown(path)} is not writable")
    try:
        room = iofs.space(path)
    except OSError as e:
        raise InputError(f"io bench: cannot statvfs {shown(path)}: {e.strerror}") from None
    small = s.files * iometa.SMALL_BYTES * 3  # the tree, its image, block rounding
    single = 0 if launch.rank else s.size + small
    need = max(single, s.size * (launch.world_size if launch.rank == 0 else 1)) + MARGIN
    if room["free_bytes"] < need:
        raise InputError(
            f"io bench: {shown(path)} has {_gib(room['free_bytes'])} free, the bench needs {_gib(need)} "
            f"(--size {s.size}, --files {s.files}, {launch.world_size} rank(s)); use a smaller --size"
        )
    if room["free_inodes"] is not None and room["free_inodes"] < s.files + 1000:
        raise InputError(f"io bench: {shown(path)} has {room['free_inodes']} free inodes, --files {s.files}")
    return room


def make_scratch(path: str, launch: LaunchEnv) -> str:
    try:
        if launch.world_size == 1:
            return tempfile.mkdtemp(prefix="cordee-io-", dir=path)
        scratch = os.path.join(path, iockpt.scratch_name(launch))
        os.makedirs(scratch, exist_ok=True)
        return scratch
    except OSError as e:
        raise InputError(f"io bench: cannot create a directory in {shown(path)}: {e.strerror}") from None


def cache_notes(why: str | None) -> dict:
    """What each figure says about the page cache; `why` the pages could not be dropped, or None."""
    dropped = why or "cold: pages dropped (fsync + posix_fadvise DONTNEED per file)"
    return {
        "dropped": dropped,
        "tree": dropped,
        "image": f"fresh squashfuse mount; image file: {why or 'pages dropped (posix_fadvise DONTNEED)'}",
    }


def run(path: str, s: Settings, launch: LaunchEnv, say) -> dict | None:
    """The whole bench in this rank; the document on rank 0, None on the others."""
    bounded = iofs.Bounded(s.timeout_s)  # even a stat of PATH may hang on a stalled filesystem
    room = bounded("checking PATH", lambda: check_path(path, s, launch))
    mount = iofs.mount_of(path)
    scratch = bounded("mkdir", lambda: make_scratch(path, launch))
    figures: list[dict] = []
    ckpt = None
    try:
        if launch.world_size > 1:
            ckpt = iockpt.checkpoint(scratch, launch, s.size, bounded, say)
            if ckpt is None:
                return None  # rank 0 reports; it removes the scratch directory
            figures.append(ckpt.pop("figure"))
        own = os.path.join(scratch, "rank0")
        small = os.path.join(own, "small")
        bounded("mkdir", lambda: os.makedirs(small))
        why = bounded("page-cache probe", lambda: iofs.probe_drop(own, mount.fstype))
        notes = cache_notes(why)
        figures += iometa.metadata(small, s.files, bounded, notes["dropped"], say)
        figures += iothroughput.throughput(own, s.size, s.quick, bounded, notes["dropped"], say)
        figures += iometa.squashfs_comparison(own, small, s.files, bounded, notes, say)
    finally:
        if launch.rank == 0:
            _cleanup(scratch, s, say)
    return document(path, s, launch, mount, room, figures, ckpt, why)


def _cleanup(scratch: str, s: Settings, say) -> None:
    if s.keep:
        say(f"kept {scratch}")
        return
    try:
        bounded = iofs.Bounded(min(s.timeout_s, CLEANUP_S))
        bounded("cleanup", lambda: shutil.rmtree(scratch, ignore_errors=True))
    except CordeeError:
        say(f"could not remove {scratch} in time (left behind)")


def document(path, s: Settings, launch: LaunchEnv, mount, room: dict, figures, ckpt, why) -> dict:
    return {
        "schema": SCHEMA,
        "path": os.path.abspath(path),
        "filesystem": {
            "type": mount.fstype,
            "source": mount.source,
            "mountpoint": mount.mountpoint,
            "page_cache": why or "droppable (posix_fadvise DONTNEED, checked with mincore)",
            **room,
        },
        "host": platform.node(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {
            "files": s.files,
            "file_bytes": iometa.SMALL_BYTES,
            "size": s.size,
            "quick": s.quick,
            "timeout_s": s.timeout_s,
            "ranks": launch.world_size,
            "scheduler": launch.scheduler,
        },
        "figures": figures,
        "checkpoint": ckpt,
    }
