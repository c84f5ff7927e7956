"""`cordee data pack SRC OUT.sqsh` and `cordee data verify IMAGE` (cordee.storage.pack): progress
on stderr, a summary (or --json) on stdout."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import contextmanager

import click

from cordee.cli.data import Progress
from cordee.cli.options import Seconds, json_option
from cordee.numbers import byte_size

PACK_SCHEMA = "cordee.data.pack/1"
VERIFY_SCHEMA = "cordee.data.verify/1"
SHOWN_PROBLEMS = 50  # in the text output; --json lists every one
DEFAULT_TIMEOUT = 6 * 3600  # a few TB at disk speed
PHASES = {"scan": "scanning", "checksum": "checksumming", "squash": "writing the image"}


class PhaseProgress:
    """The storage functions' progress(phase, done, total) as lines on stderr: files done of the
    total and MiB/s while checksumming. A phase that was shown ends with a line of its last
    state; a short one shows nothing (an error then stays the only line)."""

    def __init__(self, label: str) -> None:
        self.out = Progress(label=label)
        self.phase: str | None = None
        self.state = (0, 0)
        self.phase_start = time.monotonic()
        self.hashed = 0  # bytes, from the "bytes" phase
        self.shown = False  # a line of this phase was written

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase == "bytes":
            self.hashed = done
            return
        if phase != self.phase:
            self.finish()
            self.phase, self.phase_start, self.shown = phase, time.monotonic(), False
        self.state = (done, total)
        if self.out.due():
            self.out.show(self.text())
            self.shown = True

    def text(self) -> str:
        done, total = self.state
        seconds = max(time.monotonic() - self.phase_start, 1e-9)
        if self.phase == "scan":
            return f"{PHASES['scan']}: {done} entries"
        line = f"{PHASES.get(self.phase, self.phase)}: {done} / {total} files"
        line += f" ({100.0 * done / total:.0f}%)" if total else ""
        if self.phase == "checksum":
            line += f", {byte_size(self.hashed / seconds)}/s"
        return f"{line}, {seconds:.1f} s"

    def finish(self) -> None:
        if self.phase is not None and self.shown:
            self.out.show(self.text(), final=True)
        self.phase = None


@contextmanager
def _term_as_interrupt():
    """SIGTERM (scancel, a job's time limit) unwinds as Ctrl-C does: the temporary image is
    removed, mksquashfs stopped, exit 130."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _mount_point(ctx, param, value: str) -> str:
    if not value.startswith("/") or ":" in value or "," in value or not value.isprintable():
        raise click.BadParameter(f"{value!r}: an absolute path without ':' or ',' is required")
    return value


timeout_option = click.option(
    "--timeout",
    type=Seconds(7 * 86400),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Give up (exit 3) after this many seconds.",
)


@click.command(
    "pack",
    short_help="Pack a dataset directory into a reproducible squashfs image.",
    help="Pack the directory SRC into the squashfs image OUT (mksquashfs, zstd), with a manifest "
    ".cordee-manifest.json at its root: path, size and sha256 of every regular file, the target "
    "of every symbolic link. The same SRC gives the same image, byte for byte (timestamps 0, "
    "owner root, files readable by all, no xattrs). OUT is written under a temporary name and "
    "renamed: it is complete or absent. Prints the EDF mount line (`OUT:/data:sqsh`). Exit 2: "
    "bad input (SRC missing or not a directory, OUT exists without --force, a FIFO, device or "
    "unreadable file in SRC, no space left); 3: past --timeout.",
)
@click.argument("src")
@click.argument("out", metavar="OUT.sqsh")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option(
    "--mount-point",
    metavar="PATH",
    default="/data",
    show_default=True,
    callback=_mount_point,
    help="Where the EDF mount line puts the image in the container.",
)
@timeout_option
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option(PACK_SCHEMA)
def pack_command(src, out, force, mount_point, timeout, quiet, as_json) -> int:
    from cordee.storage.pack import pack

    progress = None if quiet else PhaseProgress("pack")
    with _term_as_interrupt():
        result = pack(src, out, force=force, progress=progress, timeout_s=timeout)
    if progress:
        progress.finish()
    mount = f"{result.image}:{mount_point}:sqsh"
    summary = {
        "schema": PACK_SCHEMA,
        "image": result.image,
        "files": result.files,
        "bytes": result.bytes,
        "image_bytes": result.image_bytes,
        "seconds": round(result.seconds, 3),
        "manifest_sha256": result.manifest_sha256,
        "mount": mount,
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return 0
    image = _shown(result.image)
    sys.stdout.write(
        f"{image}: {result.files} files ({byte_size(result.bytes)}) "
        f"in a {byte_size(result.image_bytes)} image, "
        f"{result.seconds:.1f} s; manifest sha256 {result.manifest_sha256}\n"
        f"EDF mount: {json.dumps(mount)}  (mounts = [...] in the EDF)\n"
    )
    return 0


@click.command(
    "verify",
    short_help="Check a packed image against its manifest.",
    help="Read the manifest inside IMAGE (made by `cordee data pack`) and every file of the image "
    "(through squashfuse, or unpacked with unsquashfs where FUSE cannot be used), and report "
    "missing, extra, changed and unreadable entries. Exit 0: every file matches; 1: N problems, "
    "listed; 2: the image cannot be read at all (no such file, not squashfs, truncated, no or a "
    "damaged manifest); 3: past --timeout.",
)
@click.argument("image")
@timeout_option
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option(VERIFY_SCHEMA)
def verify_command(image, timeout, quiet, as_json) -> int:
    from cordee.storage.pack import verify

    progress = None if quiet else PhaseProgress("verify")
    result = verify(image, progress=progress, timeout_s=timeout)
    if progress:
        progress.finish()
    if as_json:
        doc = {
            "schema": VERIFY_SCHEMA,
            "image": result.image,
            "ok": result.ok,
            "files": result.files,
            "bytes": result.bytes,
            "seconds": round(result.seconds, 3),
            "manifest_sha256": result.manifest_sha256,
            "problems": result.problems,
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0 if result.ok else 1
    name = _shown(result.image)
    if result.ok:
        sys.stdout.write(
            f"{name}: ok, {result.files} files ({byte_size(result.bytes)}) match the manifest "
            f"({result.seconds:.1f} s)\n"
        )
        return 0
    count = len(result.problems)
    lines = [f"{name}: {count} problem{'s' if count != 1 else ''} against the manifest"]
    lines += [f"  {p}" for p in result.problems[:SHOWN_PROBLEMS]]
    if count > SHOWN_PROBLEMS:
        lines.append(f"  ... and {count - SHOWN_PROBLEMS} more (--json lists every one)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1


def _shown(path: str) -> str:
    from cordee.storage.manifest import printable

    return printable(os.path.normpath(path))
