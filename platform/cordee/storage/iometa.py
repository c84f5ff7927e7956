"""Small files for `cordee io bench`: create, stat, open+read of a dataset-like tree, and the same
files read from a squashfs image of the tree (squashfuse), as the ratio of the two rates.

Each file has its own random (incompressible) content: identical files would be stored once in
the image and would compress to nothing, which no real dataset does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cordee.errors import CordeeError
from cordee.storage import iofs

SMALL_BYTES = 4096
PER_DIR = 1000  # files per directory: a tree, as datasets are stored, not one huge directory
READ_CHUNK = 1 << 16
POOL_BYTES, STRIDE = 1 << 26, 4099


def small_paths(count: int) -> list[str]:
    return [f"d{i // PER_DIR:04d}/f{i:07d}.bin" for i in range(count)]


def create(root: str, rels: list[str], check: Callable[[], None]) -> float:
    """Create every file with SMALL_BYTES of content (directories included); seconds, no fsync.
    File i holds the pool's bytes from i * STRIDE (mod its size): a prime stride over a pool of
    2**26 bytes gives every file of up to 2**26 a different slice of random bytes."""
    pool = memoryview(os.urandom(POOL_BYTES + SMALL_BYTES))  # before the clock starts
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    t0 = time.perf_counter()
    for i, rel in enumerate(rels):
        start = i * STRIDE % POOL_BYTES
        data = pool[start : start + SMALL_BYTES]
        if i % PER_DIR == 0:
            check()
            os.mkdir(os.path.join(root, os.path.dirname(rel)))
        fd = os.open(os.path.join(root, rel), flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def stat_all(root: str, rels: list[str], check: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    for i, rel in enumerate(rels):
        if i % PER_DIR == 0:
            check()
        os.stat(os.path.join(root, rel))
    return time.perf_counter() - t0


def drop_all(root: str, rels: list[str], check: Callable[[], None]) -> None:
    for i, rel in enumerate(rels):
        if i % PER_DIR == 0:
            check()
        iofs.drop_file(os.path.join(root, rel))


def read_all(root: str, rels: list[str], check: Callable[[], None]) -> tuple[float, int]:
    """Open, read to the end, close each file in order: (seconds, bytes read)."""
    total = 0
    t0 = time.perf_counter()
    for i, rel in enumerate(rels):
        if i % PER_DIR == 0:
            check()
        fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_CLOEXEC)
        try:
            while chunk := os.read(fd, READ_CHUNK):
                total += len(chunk)
        finally:
            os.close(fd)
    return time.perf_counter() - t0, total


def files_figure(name: str, count: int, seconds: float, cache: str, nbytes: int | None = None) -> dict:
    return {
        "name": name,
        "value": count / seconds if seconds > 0 else None,
        "unit": "files/s",
        "ops": count,
        "seconds": seconds,
        "bytes": nbytes,
        "cache": cache,
    }


def metadata(root: str, count: int, bounded: iofs.Bounded, dropped: str, say) -> list[dict]:
    """Create, stat, then (pages dropped where possible) open+read `count` small files."""
    rels = small_paths(count)
    check = bounded.check
    say(f"metadata: creating {count} files of {SMALL_BYTES} B")
    t_create = bounded("create", lambda: create(root, rels, check))
    say("metadata: stat")
    t_stat = bounded("stat", lambda: stat_all(root, rels, check))
    bounded("fsync+fadvise", lambda: drop_all(root, rels, check))
    say("metadata: open+read")
    t_read, nbytes = bounded("open+read", lambda: read_all(root, rels, check))
    return [
        files_figure("create", count, t_create, "writes into the page cache, no fsync", count * SMALL_BYTES),
        files_figure("stat", count, t_stat, "warm (just written)"),
        files_figure("open+read", count, t_read, f"{dropped}; directory entries and inodes warm", nbytes),
    ]


def squashfs_comparison(scratch: str, root: str, count: int, bounded: iofs.Bounded, note, say) -> list[dict]:
    """The same small files read from the tree and from its squashfs image (packed with cordee
    data pack, mounted read-only with squashfuse), each after its pages were dropped."""
    name = "squashfs/tree open+read"
    from cordee.edf.run import fuse_unusable
    from cordee.storage.pack import mounted, pack

    why = fuse_unusable()
    if why:  # before packing: nothing to measure without a mount
        return [skipped(name, count, why)]
    rels = small_paths(count)
    check = bounded.check
    image = os.path.join(scratch, "small.sqsh")
    say(f"squashfs: packing {count} files")
    try:
        t0 = time.perf_counter()
        bounded("squashfs pack", lambda: pack(root, image, timeout_s=bounded.timeout_s))
        t_pack = time.perf_counter() - t0
    except iofs.Stalled:
        raise
    except (CordeeError, OSError) as e:
        return [skipped(name, count, f"packing failed: {e}")]
    bounded("fsync+fadvise", lambda: (drop_all(root, rels, check), iofs.drop_file(image)))
    say("squashfs: open+read of the tree")
    t_tree, tree_bytes = bounded("tree open+read", lambda: read_all(root, rels, check))

    def read_image() -> tuple[float, int]:
        # unpack=False: an unsquashfs copy would measure the disk again, not squashfs
        with mounted(image, timeout_s=bounded.timeout_s, unpack=False) as directory:
            return read_all(os.fspath(directory), rels, check)

    say("squashfs: open+read through squashfuse")
    try:
        measured = bounded("squashfs open+read", read_image)
    except iofs.Stalled:
        raise
    except (CordeeError, OSError) as e:
        return [skipped(name, count, f"cannot mount the image: {e}")]
    t_sqsh, sqsh_bytes = measured
    if sqsh_bytes != tree_bytes:
        raise CordeeError(f"io bench: the squashfs image gave {sqsh_bytes} bytes, the tree {tree_bytes}")
    warm = f"{note['tree']}; entries and inodes warm"
    tree = files_figure("tree open+read", count, t_tree, warm, tree_bytes)
    sqsh = files_figure("squashfs open+read", count, t_sqsh, note["image"], sqsh_bytes)
    ratio = {
        "name": name,
        "value": sqsh["value"] / tree["value"] if sqsh["value"] and tree["value"] else None,
        "unit": "x (files/s, squashfs over tree)",
        "ops": count,
        "seconds": t_tree + t_sqsh,
        "bytes": tree_bytes + sqsh_bytes,
        "cache": "as for 'tree open+read' and 'squashfs open+read'",
    }
    packed = files_figure("squashfs pack", count, t_pack, "reads the warm tree")
    packed["bytes"] = os.path.getsize(image)
    return [packed, tree, sqsh, ratio]


def skipped(name: str, count: int, why: str) -> dict:
    return {
        "name": name,
        "value": None,
        "unit": "x (files/s, squashfs over tree)",
        "ops": count,
        "seconds": None,
        "bytes": None,
        "cache": "n/a",
        "skipped": f"skipped: {why}",
    }
