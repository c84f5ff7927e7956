"""Throughput for `cordee io bench`: one large file written sequentially (fsync included), read
back sequentially, and read at random offsets in the sizes a data loader issues."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

from cordee.storage import iofs

CHUNK = 8 << 20  # sequential I/O in 8 MiB calls
ALIGN = 4096
GIB = 1 << 30
RANDOM_SIZES = (4 << 10, 64 << 10, 1 << 20)
RANDOM_OPS = {4 << 10: 2000, 64 << 10: 500, 1 << 20: 100}  # --quick: a tenth
RANDOM_SOFT_S = 10.0  # a size's reads stop early past this; the figure counts the reads done


def write_file(path: str, size: int, check: Callable[[], None]) -> tuple[float, float, float]:
    """Write `size` random bytes in CHUNK calls, fsync, close: (seconds, wall start, wall end).
    The clock covers open to the end of fsync: data only in the page cache is not written."""
    block = os.urandom(min(CHUNK, size))  # random: a compressing filesystem must not shrink it
    view = memoryview(block)
    wall0, t0 = time.time(), time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        left = size
        while left:
            check()
            left -= os.write(fd, view[: min(left, len(block))])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0, wall0, time.time()


def read_file(path: str, check: Callable[[], None]) -> tuple[float, int]:
    buf = bytearray(CHUNK)
    total = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while True:
            check()
            n = os.readv(fd, [buf])
            if not n:
                break
            total += n
    finally:
        os.close(fd)
    return time.perf_counter() - t0, total


def random_reads(path: str, io_size: int, ops: int, check: Callable[[], None], seed: int) -> tuple:
    """`ops` preads of `io_size` bytes at random 4 KiB-aligned offsets: (reads done, seconds)."""
    size = os.path.getsize(path)
    slots = max(1, (size - io_size) // ALIGN + 1)
    rng = random.Random(seed)
    offsets = [rng.randrange(slots) * ALIGN for _ in range(ops)]
    buf = bytearray(io_size)
    done = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        t0 = time.perf_counter()
        for offset in offsets:
            if done % 64 == 0:
                check()
                if time.perf_counter() - t0 > RANDOM_SOFT_S:
                    break
            os.preadv(fd, [buf], offset)
            done += 1
        return done, time.perf_counter() - t0
    finally:
        os.close(fd)


def gib_s(nbytes: int, seconds: float) -> float | None:
    return nbytes / GIB / seconds if seconds > 0 else None


def throughput(scratch: str, size: int, quick: bool, bounded: iofs.Bounded, dropped: str, say) -> list[dict]:
    path = os.path.join(scratch, "sequential.bin")
    check = bounded.check
    say(f"sequential: writing {size} B")
    t_write, _, _ = bounded("sequential write", lambda: write_file(path, size, check))
    bounded("fadvise", lambda: iofs.drop_file(path))
    say("sequential: reading")
    t_read, nread = bounded("sequential read", lambda: read_file(path, check))
    figures = [
        {"name": "sequential write", "value": gib_s(size, t_write), "unit": "GiB/s", "ops": -(-size // CHUNK),
         "seconds": t_write, "bytes": size, "cache": "written through the page cache; fsync timed"},
        {"name": "sequential read", "value": gib_s(nread, t_read), "unit": "GiB/s", "ops": -(-nread // CHUNK),
         "seconds": t_read, "bytes": nread, "cache": dropped},
    ]  # fmt: skip
    for io_size in RANDOM_SIZES:
        ops = max(1, RANDOM_OPS[io_size] // (10 if quick else 1))
        bounded("fadvise", lambda: iofs.drop_file(path))
        say(f"random reads: {ops} x {io_size} B")
        done, seconds = bounded("random reads", lambda n=io_size, k=ops: random_reads(path, n, k, check, n))
        figures.append({
            "name": f"random read {io_size // 1024} KiB",
            "value": done / seconds if seconds > 0 else None,
            "unit": "IOPS",
            "gib_per_s": gib_s(done * io_size, seconds),
            "ops": done,
            "seconds": seconds,
            "bytes": done * io_size,
            "cache": f"{dropped}; default readahead",
        })  # fmt: skip
    bounded("unlink", lambda: os.unlink(path))
    return figures
