"""`cordee io bench PATH`: measure the filesystem under PATH as a training job uses it (cordee.io/1)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import click

from cordee.cli import VERBS
from cordee.cli.options import Number, Seconds, json_option, verb_group
from cordee.errors import shown

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"([0-9]{1,15})([KMGT]?)(?:I?B)?", re.ASCII | re.IGNORECASE)
MIN_SIZE, MAX_SIZE = 1 << 20, 1 << 42  # 1 MiB .. 4 TiB


class Size(click.ParamType):
    """Bytes, with binary K, M, G, T suffixes: 256M, 4G."""

    name = "bytes"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = _SIZE.fullmatch(str(value).strip())
        if not m:
            self.fail(f"{shown(value)} is not a size (bytes, or with K, M, G, T: 256M, 4G)", param, ctx)
        size = int(m.group(1)) * UNITS[m.group(2).upper()]
        if not MIN_SIZE <= size <= MAX_SIZE:
            self.fail(f"{shown(value)} must be 1M..4T", param, ctx)
        return size


HELP = (
    "Measure the filesystem under PATH in a scratch directory created in it (removed at the end, "
    "also on failure or Ctrl-C, unless --keep): create, stat and open+read of --files small files "
    "(4 KiB); sequential write (fsync timed) and read of --size bytes; random reads of 4 KiB, 64 KiB "
    "and 1 MiB; the same small files read from a squashfs image of them (squashfuse) against the "
    "tree, as a ratio. Every figure says how the page cache was handled: pages are dropped per file "
    "with fsync + posix_fadvise(DONTNEED) (no root needed); a probe file's pages counted with "
    "mincore(2) tell where that fails (tmpfs). Launched with several ranks (srun ... cordee io bench "
    "PATH, or any launcher cordee launch understands), every rank first writes a --size shard at "
    "once and rank 0 reports the aggregate rate and the slowest rank, then measures the rest alone. "
    "The ranks meet through files in PATH, which must then be a filesystem shared by every node. "
    "Each phase must finish within --timeout seconds (its I/O runs in a thread that is abandoned "
    "past it: exit 3). Exit 0 measured, 2 bad input (PATH missing, not a writable directory, not "
    "enough space), 3 a phase stalled or a rank never arrived."
)


@verb_group("io", VERBS["io"].help)
def command() -> None:
    pass


@command.command(
    "bench",
    short_help="Metadata, throughput, loader reads, squashfs vs tree, checkpoint writes.",
    help=HELP,
)
@click.argument("path", metavar="PATH")
@click.option("--quick", is_flag=True, help="Small sizes (500 files, 16M): a smoke test in seconds.")
@click.option("--size", type=Size(), help="Bytes of the sequential file and of each rank's shard (512M).")
@click.option("--files", type=Number(int, 10, 1_000_000), help="Small files (default 10000).")
@click.option(
    "--timeout", type=Seconds(most=86400), default=600.0, show_default=True, metavar="S",
    help="Seconds each phase may take; the rank barrier waits as long.",
)  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the scratch directory (its path is printed).")
@json_option("cordee.io/1")
def bench(path, quick, size, files, timeout, keep, as_json):
    from cordee.launch.launchenv import detect
    from cordee.storage import iobench

    launch = detect(os.environ)
    s = iobench.settings(files=files, size=size, quick=quick, timeout_s=timeout, keep=keep)
    prefix = "io bench" if launch.world_size == 1 else f"io bench [rank {launch.rank}]"
    start = time.monotonic()

    def say(msg: str) -> None:
        print(f"{prefix} {time.monotonic() - start:7.1f}s: {msg}", file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGTERM, _interrupt)  # scancel: the scratch directory is removed too
    try:
        doc = iobench.run(path, s, launch, say)
    finally:
        signal.signal(signal.SIGTERM, old)
    if doc is not None:
        sys.stdout.write((json.dumps(doc, indent=2) if as_json else "\n".join(table(doc))) + "\n")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def table(doc: dict) -> list[str]:
    fs = doc["filesystem"]
    lines = [
        f"{doc['path']}: {fs['type']} from {fs['source']} (mounted at {fs['mountpoint']}), "
        f"{fs['free_bytes'] / (1 << 30):.1f} GiB free; {doc['host']}, Linux {doc['kernel']}, {doc['date']}",
        f"{'figure':<28}{'value':>12} {'unit':<10}{'ops':>8}{'seconds':>9}  page cache",
    ]
    for f in doc["figures"]:
        if f.get("skipped"):
            lines.append(f"{f['name']:<28}{'-':>12} {'':<10}{'':>8}{'':>9}  {f['skipped']}")
            continue
        unit = f["unit"].split(" ")[0]
        extra = f" ({_num(f['gib_per_s'])} GiB/s)" if f.get("gib_per_s") is not None else ""
        lines.append(
            f"{f['name']:<28}{_num(f['value']):>12} {unit:<10}{f['ops']:>8}{_num(f['seconds']):>9}  "
            f"{f['cache']}{extra}"
        )
    ckpt = doc.get("checkpoint")
    if ckpt:
        slow = ckpt["slowest"]
        lines.append(
            f"checkpoint: {len(ckpt['ranks'])} ranks on {len(ckpt['nodes'])} node(s); slowest rank "
            f"{slow['rank']} on {slow['node']}: {slow['seconds']:.3f} s ({_num(slow['gib_per_s'])} GiB/s)"
        )
        lines += [
            f"  rank {r['rank']:>5} {r['node']:<20}{r['seconds']:>9.3f} s {_num(r['gib_per_s']):>8} GiB/s"
            for r in ckpt["ranks"]
        ]
    return lines
