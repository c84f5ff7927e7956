"""`make demo`, storage step: a small-file dataset packed into a squashfs image and checked, the
filesystem benchmark with its tree-against-squashfs comparison, and a checkpoint interval.

1. 20,000 small files (nested directories, 0-4 KiB each) -> `cordee data pack` twice: the two
   images must be identical byte for byte; `cordee data verify` passes; a copy with one flipped
   byte in a file's data must fail verification.
2. `cordee io bench --quick` in a directory on this machine's disk: metadata, throughput, loader
   reads and the small files read from the tree and from the squashfs, as a ratio.
3. `cordee ckpt interval` for an example job (the cost and MTBF are examples, said as such).
Returns the list of problems (empty when every step did what it should).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = 20_000


def _cordee() -> str:
    return str(Path(sys.executable).with_name("cordee"))


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    print(f"\n== cordee {' '.join(args)}")
    return subprocess.run([_cordee(), *args], capture_output=True, text=True, timeout=timeout)


def make_tree(root: Path, files: int, seed: int = 0) -> int:
    """`files` small files of 0-4 KiB in 100 directories of 10 subdirectories; total bytes."""
    rng = random.Random(seed)
    blob = rng.randbytes(1 << 20)
    total = 0
    for i in range(files):
        d = root / f"shard{i % 100:03d}" / f"part{(i // 100) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(4097)
        start = rng.randrange(len(blob) - size)
        (d / f"sample{i:06d}.bin").write_bytes(blob[start : start + size])
        total += size
    return total


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _flip_in_data(image: Path, copy: Path, needle: bytes) -> bool:
    """A copy of `image` with one byte flipped inside the (uncompressible, so stored verbatim)
    data of the file that holds `needle`; False when the needle is not in the image."""
    data = bytearray(image.read_bytes())
    at = data.find(needle)
    if at < 0:
        return False
    data[at + len(needle) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    return True


def pack_step(work: Path) -> list[str]:
    src, image, again = work / "dataset", work / "dataset.sqsh", work / "again.sqsh"
    t0 = time.monotonic()
    total = make_tree(src, FILES)
    # one large random file: its data is stored uncompressed, so a flipped byte lands in file data
    big = random.Random(1).randbytes(256 << 10)
    (src / "big.bin").write_bytes(big)
    mib, seconds = (total + len(big)) / 2**20, time.monotonic() - t0
    print(f"\n== dataset: {FILES + 1} files, {mib:.1f} MiB ({seconds:.1f}s)")
    problems = []
    cp = _run("data", "pack", str(src), str(image), "--quiet")
    print(cp.stdout.rstrip() or cp.stderr.rstrip())
    if cp.returncode != 0:
        return [f"data pack failed (exit {cp.returncode}): {cp.stderr.strip()}"]
    cp2 = _run("data", "pack", str(src), str(again), "--quiet", "--json")
    if cp2.returncode != 0:
        return [f"second data pack failed (exit {cp2.returncode}): {cp2.stderr.strip()}"]
    first, second = _sha256(image), _sha256(again)
    same = "identical" if first == second else "DIFFER"
    print(f"image sha256 {first[:16]}..., again {second[:16]}...: {same}")
    if first != second:
        problems.append("packing the same directory twice gave different images")
    cp = _run("data", "verify", str(image))
    print(cp.stdout.rstrip() or cp.stderr.rstrip())
    if cp.returncode != 0:
        problems.append(f"data verify of a good image failed (exit {cp.returncode})")
    damaged = work / "damaged.sqsh"
    if not _flip_in_data(image, damaged, big[100_000:100_064]):
        problems.append("the big file's data was not found verbatim in the image")
    else:
        cp = _run("data", "verify", str(damaged))
        print((cp.stdout.rstrip() + "\n" + cp.stderr.rstrip()).strip()[:600])
        print(f"(exit {cp.returncode})")
        if cp.returncode == 0:
            problems.append("data verify did not catch a flipped byte in a file's data")
    return problems


def io_step(work: Path) -> list[str]:
    cp = _run("io", "bench", str(work), "--quick", timeout=900)
    print(cp.stdout.rstrip())
    if cp.returncode != 0:
        return [f"io bench failed (exit {cp.returncode}): {cp.stderr.strip()[-300:]}"]
    return []


def interval_step() -> list[str]:
    # example numbers, not measurements: a 45 s blocking save, 256 nodes of 100,000 h MTBF each
    print("\n(example: 45 s per checkpoint, 256 nodes with a node MTBF of 100,000 h, 3.2 s per step)")
    cp = _run(
        "ckpt", "interval", "--cost", "45", "--nodes", "256", "--node-mtbf", "100000", "--step-time", "3.2"
    )
    print(cp.stdout.rstrip())
    return [] if cp.returncode == 0 else [f"ckpt interval failed (exit {cp.returncode}): {cp.stderr.strip()}"]


def storage_step() -> list[str]:
    # on the disk, not a tmpfs: the page-cache drops the benchmark reports need a real filesystem
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="cordee-demo-storage-", dir=base))
    try:
        problems = pack_step(work)
        problems += io_step(work)
        problems += interval_step()
        return problems
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    found = storage_step()
    for p in found:
        print(f"demo: WRONG: {p}", file=sys.stderr)
    print(json.dumps({"problems": found}))
    sys.exit(1 if found else 0)
