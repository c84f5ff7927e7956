"""`cordee data pack` / `cordee data verify`: a dataset directory as one reproducible squashfs
image, with its manifest inside, and the check of an image against that manifest.

Millions of small files overwhelm a parallel filesystem's metadata servers; one image mounted
with `:sqsh` in the EDF is one file to Lustre (CSCS's storage guidance for the Alps system).
The image is made by mksquashfs (squashfs-tools 4.5 or later) with everything that varies
between runs fixed: timestamps 0, owner root, no xattrs, the tree in sorted order, mksquashfs'
reproducible mode (its default since 4.5). The manifest (`MANIFEST_NAME`: path, size and sha256
of every regular file, the target of every link) is added as a pseudo file, so SRC is never
touched. The image is written beside OUT under a temporary name, synced, and renamed: OUT is
complete or absent.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cordee import process
from cordee.errors import CordeeError, InputError
from cordee.fileio import ReadError, read_bounded
from cordee.storage.manifest import (
    MANIFEST_NAME,
    DeadlineError,
    Progress,
    checksum,
    compare,
    manifest_bytes,
    parse_manifest,
    printable,
    scan,
)

__all__ = ["MANIFEST_NAME", "PackResult", "VerifyResult", "check_image", "mounted", "pack", "verify"]

ZSTD_LEVEL = 3  # as for container images: close to level 15's size, many times faster to pack
MANIFEST_MAX = 1 << 30  # ~100 bytes per entry: room for millions of files
SUPERBLOCK = 96  # squashfs 4 superblock: magic "hsqs", ..., bytes_used (u64) at offset 40
STOP_GRACE = 5


@dataclass(frozen=True)
class PackResult:
    image: str  # absolute path
    files: int
    bytes: int  # of the regular files packed
    image_bytes: int
    seconds: float
    manifest_sha256: str  # names the content, whatever the compression


@dataclass(frozen=True)
class VerifyResult:
    image: str
    ok: bool
    problems: list[str]  # one line each, sorted by path
    files: int  # regular files in the manifest
    bytes: int
    seconds: float
    manifest_sha256: str


def mksquashfs_argv(src: str, out: str, manifest: str) -> list[str]:
    return [
        "mksquashfs",
        src,
        out,
        "-noappend",
        "-no-recovery",
        "-comp",
        "zstd",
        "-Xcompression-level",
        str(ZSTD_LEVEL),
        "-all-root",
        "-no-xattrs",
        "-mkfs-time",
        "0",
        "-all-time",
        "0",
        # owned by root in the image: without read access for all, a job's user could not read them
        "-action",
        "chmod(a+rX)@true",
        "-exit-on-error",  # a failed pseudo file would otherwise become an empty one
        "-quiet",
        "-no-progress",
        "-info",  # a line per file written: the progress of the squash phase
        "-p",
        f"{MANIFEST_NAME} f 444 0 0 cat {shlex.quote(manifest)}",
    ]


def check_image(image: str) -> int:
    """InputError unless `image` is a whole squashfs 4 file; its size in bytes."""
    try:
        fd = os.open(image, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{printable(image)}: no such file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{printable(image)}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{printable(image)}: not a regular file, so not a squashfs image")
        head = os.pread(fd, SUPERBLOCK, 0)
    except OSError as e:
        raise InputError(f"{printable(image)}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(head) < SUPERBLOCK or head[:4] != b"hsqs" or struct.unpack_from("<H", head, 28)[0] != 4:
        raise InputError(f"{printable(image)}: not a squashfs 4 image (no squashfs superblock at its start)")
    used = struct.unpack_from("<Q", head, 40)[0]
    if st.st_size < used:
        raise InputError(f"{printable(image)}: truncated: {st.st_size} bytes, its superblock says {used}")
    return st.st_size


def _check_paths(src: str, out: str, force: bool) -> None:
    try:
        st = os.stat(src)
    except OSError as e:
        raise InputError(f"{printable(src)}: {e.strerror or e} (SRC must be a directory)") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{printable(src)}: not a directory (SRC must be a directory)")
    directory = os.path.dirname(out)
    if not os.path.isdir(directory):
        raise InputError(f"{printable(directory)}: no such directory (the directory of OUT must exist)")
    if os.path.isdir(out):
        raise InputError(f"{printable(out)}: a directory (OUT is the image file to write)")
    if os.path.lexists(out) and not force:
        raise InputError(f"{printable(out)} exists; pass --force to replace it")
    if os.path.lexists(out) and not _is_file(out):  # --force replaces files, never a device or a FIFO
        raise InputError(f"{printable(out)}: not a regular file; --force replaces only an earlier image")
    real_src, real_dir = os.path.realpath(src), os.path.realpath(directory)
    if real_dir == real_src or real_dir.startswith(real_src.rstrip("/") + "/"):
        raise InputError(f"{printable(out)}: inside SRC {printable(src)}; write the image elsewhere")
    if shutil.which("mksquashfs") is None:
        raise InputError("cordee data pack needs mksquashfs (squashfs-tools 4.5 or later)")


def _is_file(path: str) -> bool:
    """A regular file, or a link to one (the link is what --force replaces)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _refuse_unpackable(src: str, entries) -> None:
    for e in entries:
        if e.kind == "other":
            raise InputError(f"{printable(os.path.join(src, e.path))}: {e.note}; cannot pack it")
    if any(e.path == MANIFEST_NAME for e in entries):
        raise InputError(f"{printable(src)}: holds a file named {MANIFEST_NAME}, the name of the manifest")


def _mksquashfs(src: str, tmp: str, manifest: str, files: int, progress, deadline: float) -> None:
    written = 0

    def on_line(line: str) -> None:
        nonlocal written
        if line.startswith("file ") and progress is not None:
            written += 1
            progress("squash", written, files)

    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}  # clashes with -mkfs-time
    run = process.run(
        mksquashfs_argv(src, tmp, manifest),
        timeout=max(deadline - time.monotonic(), 1.0),
        grace=STOP_GRACE,
        env=env,
        stdout=on_line,
    )
    if run.timed_out:
        raise DeadlineError(f"mksquashfs {printable(src)}: did not finish in time; nothing written")
    if run.returncode != 0:
        detail = " ".join(run.stderr.split())
        if "No space left" in detail:
            raise InputError(f"{printable(os.path.dirname(tmp))}: no space left on device for the image")
        raise CordeeError(f"mksquashfs {printable(src)} failed (exit {run.returncode}): {detail[-200:]}")


def _commit(tmp: str, out: str, force: bool) -> None:
    """tmp -> out, synced; without force never over a file that appeared meanwhile."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if force:
        os.replace(tmp, out)
    else:
        try:
            os.link(tmp, out)  # fails if out exists: no window between a check and a rename
        except FileExistsError:
            raise InputError(f"{printable(out)} exists; pass --force to replace it") from None
        except OSError:  # a filesystem without hard links
            if os.path.lexists(out):
                raise InputError(f"{printable(out)} exists; pass --force to replace it") from None
            os.replace(tmp, out)
    dfd = os.open(os.path.dirname(out), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def pack(
    src: str, out: str, *, force: bool = False, progress: Progress | None = None, timeout_s: float = 3600
) -> PackResult:
    """Pack directory `src` into the squashfs image `out`. progress(phase, done, total) with
    phases "scan" (entries found; total 0), "checksum" (files hashed of total), "bytes" (bytes
    hashed; total 0), "squash" (files written of total). InputError (exit 2) for bad input and a
    full disk, DeadlineError (exit 3) past timeout_s; nothing is left behind on any failure."""
    start = time.monotonic()
    deadline = start + timeout_s
    out = os.path.abspath(out)
    _check_paths(src, out, force)
    root = os.path.realpath(src)  # mksquashfs would pack a link to SRC as that link
    entries = scan(root, progress=progress)
    _refuse_unpackable(src, entries)
    entries = checksum(root, entries, progress=progress, deadline=deadline)
    _refuse_unpackable(src, entries)  # unreadable files show up while hashing
    manifest = manifest_bytes(entries)
    files = [e for e in entries if e.kind == "file"]
    directory, name = os.path.split(out)
    temps: list[str] = []
    try:
        for suffix in (".manifest.tmp", ".tmp"):
            fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
            temps.append(path)
            os.close(fd)
        with open(temps[0], "wb") as f:
            f.write(manifest)
        _mksquashfs(root, temps[1], temps[0], len(files) + 1, progress, deadline)
        image_bytes = check_image(temps[1])
        _commit(temps[1], out, force)
    except OSError as e:
        raise InputError(f"{printable(out)}: cannot write the image: {e.strerror or e}") from None
    finally:
        for path in temps:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return PackResult(
        image=out,
        files=len(files),
        bytes=sum(e.size for e in files),
        image_bytes=image_bytes,
        seconds=time.monotonic() - start,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
    )


@contextmanager
def mounted(image: str, *, timeout_s: float = 60, unpack: bool = True) -> Iterator[str]:
    """A read-only directory with the content of `image`: a squashfuse mount (within timeout_s),
    undone on exit, or where FUSE cannot be used an unsquashfs copy in a temporary directory,
    removed on exit (edf.run's squashfs_dir; never the image cache: a dataset can be terabytes).
    unpack=False: the mount or InputError saying why not."""
    from cordee.edf.run import squashfs_dir

    check_image(image)
    with squashfs_dir(image, os.environ, timeout=timeout_s, cache=False, unpack=unpack) as root:
        yield root


def verify(image: str, *, progress: Progress | None = None, timeout_s: float = 3600) -> VerifyResult:
    """Check every file of `image` against its manifest: missing, extra, changed or unreadable
    entries are the problems (ok: none). InputError (exit 2) when the image or its manifest
    cannot be read at all."""
    start = time.monotonic()
    deadline = start + timeout_s
    with mounted(image) as root:
        try:
            data = read_bounded(os.path.join(root, MANIFEST_NAME), MANIFEST_MAX)
        except ReadError as e:
            if not os.path.lexists(os.path.join(root, MANIFEST_NAME)):
                raise InputError(
                    f"{printable(image)}: no {MANIFEST_NAME} inside: not an image made by cordee data pack"
                ) from None
            raise InputError(f"{printable(image)}: manifest {e.reason} (a damaged image)") from None
        expected = parse_manifest(data, printable(image))
        actual = scan(root, progress=progress, skip_manifest=True)
        actual = checksum(root, actual, progress=progress, deadline=deadline)
    problems = compare(expected, actual)
    files = [e for e in expected if e.kind == "file"]
    return VerifyResult(
        image=os.path.abspath(image),
        ok=not problems,
        problems=problems,
        files=len(files),
        bytes=sum(e.size for e in files),
        seconds=time.monotonic() - start,
        manifest_sha256=hashlib.sha256(data).hexdigest(),
    )
