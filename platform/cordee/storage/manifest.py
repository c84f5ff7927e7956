"""The manifest of a packed dataset: every entry of a tree (path, kind, size, sha256 of each
regular file, target of each symbolic link), checksummed by a pool of threads, written as
deterministic JSON (sorted paths, no timestamps) and compared against a tree read back."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from cordee.errors import CordeeError, InputError, shown

SCHEMA = "cordee.pack/1"
MANIFEST_NAME = ".cordee-manifest.json"  # at the root of the image
# Lustre answers each open/read with a round trip: several in flight hide the latency (hashlib
# and reads release the GIL). More threads than cores only contend, on FUSE most (measured with
# squashfuse on 2 cores: 4 threads 1.3 s, 16 threads 3.9 s for 20,000 small files).
MAX_HASH_THREADS = 16
BATCH = 64  # files per task: one future per file would cost more than hashing a small file
READ_CHUNK = 1 << 20

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class DeadlineError(CordeeError):
    """The work ran past its time limit: exit 3."""

    exit_code = 3


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root, "/"-separated
    kind: str  # "file", "link", "dir", or "other" (anything else, or unreadable: `note` says why)
    size: int = 0
    sha256: str = ""
    note: str = ""  # a link's target; for "other", what it is


def printable(path: str) -> str:
    """A path as it may appear in a one-line message."""
    return path if path.isprintable() else shown(path)


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file, directory or symbolic link"


def scan(root: str, *, progress: Progress | None = None, skip_manifest: bool = False) -> list[Entry]:
    """Every entry below `root` (not following links), in sorted order. Entries that cannot be
    packed or read come back as kind "other" with the reason: pack refuses them, verify reports."""
    entries: list[Entry] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError as e:
            entries.append(Entry(rel or ".", "other", note=f"cannot list: {e.strerror or e}"))
            continue
        subdirs = []
        for child in children:
            path = f"{rel}/{child.name}" if rel else child.name
            if skip_manifest and path == MANIFEST_NAME:
                continue
            try:  # the kind from readdir's d_type: a stat per file costs a round trip on FUSE and Lustre
                if child.is_file(follow_symlinks=False):
                    entries.append(Entry(path, "file"))  # its size comes with its checksum
                elif child.is_dir(follow_symlinks=False):
                    entries.append(Entry(path, "dir"))
                    subdirs.append(path)
                elif child.is_symlink():
                    entries.append(Entry(path, "link", note=os.readlink(child.path)))
                else:
                    mode = child.stat(follow_symlinks=False).st_mode
                    entries.append(Entry(path, "other", note=_kind_of(mode)))
            except OSError as e:
                entries.append(Entry(path, "other", note=f"cannot read: {e.strerror or e}"))
            if progress is not None:
                progress("scan", len(entries), 0)
        stack.extend(reversed(subdirs))
    entries.sort(key=lambda e: e.path)
    return entries


def _hash_file(path: str) -> tuple[str, int, str]:
    """(sha256, size, "") or ("", 0, reason). Opened non-blocking without following links: a
    file swapped for a FIFO or a link after the scan is an error, never a hang."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        return "", 0, f"cannot read: {e.strerror or e}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "", 0, "no longer a regular file"
        digest, size = hashlib.sha256(), 0
        while chunk := os.read(fd, READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size, ""
    except OSError as e:
        return "", 0, f"cannot read: {e.strerror or e}"
    finally:
        os.close(fd)


def checksum(
    root: str, entries: list[Entry], *, progress: Progress | None = None, deadline: float | None = None
) -> list[Entry]:
    """`entries` with the sha256 and size of each regular file filled in (unreadable ones become
    kind "other"), hashed by a pool of threads. progress("checksum", files, total) and
    progress("bytes", bytes, 0) as batches finish. Raises DeadlineError past `deadline`."""
    from concurrent.futures import ThreadPoolExecutor

    files = [i for i, e in enumerate(entries) if e.kind == "file"]
    batches = [files[k : k + BATCH] for k in range(0, len(files), BATCH)]

    def work(batch: list[int]) -> list[tuple[str, int, str]]:
        return [_hash_file(os.path.join(root, entries[i].path)) for i in batch]

    out = list(entries)
    done = done_bytes = 0
    threads = min(MAX_HASH_THREADS, 2 * (os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cordee-hash")
    try:
        for batch, results in zip(batches, pool.map(work, batches), strict=True):
            for i, (sha, size, error) in zip(batch, results, strict=True):
                e = entries[i]
                out[i] = Entry(e.path, "other", note=error) if error else Entry(e.path, "file", size, sha)
                done_bytes += size
            done += len(batch)
            if progress is not None:
                progress("bytes", done_bytes, 0)
                progress("checksum", done, len(files))
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineError(
                    f"{printable(root)}: checksumming did not finish in time ({done} of {len(files)} files)"
                )
    finally:  # Ctrl-C or the deadline: queued batches are dropped, running ones finish
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _record(e: Entry) -> dict:
    if e.kind == "file":
        return {"path": e.path, "type": "file", "size": e.size, "sha256": e.sha256}
    if e.kind == "link":
        return {"path": e.path, "type": "link", "target": e.note}
    return {"path": e.path, "type": "dir"}


def manifest_bytes(entries: list[Entry]) -> bytes:
    """The manifest as JSON, one entry per line, sorted by path, no timestamps: the same tree
    always gives the same bytes. Names that are not UTF-8 are kept (surrogate escapes)."""
    files = [e for e in entries if e.kind == "file"]
    head = json.dumps({"schema": SCHEMA, "files": len(files), "bytes": sum(e.size for e in files)})
    lines = ",\n".join(json.dumps(_record(e), separators=(",", ":")) for e in entries)
    return f'{head[:-1]}, "entries": [\n{lines}\n]}}\n'.encode()


def parse_manifest(data: bytes, where: str) -> list[Entry]:
    """The entries of a manifest; InputError naming `where` when it is not one."""

    def bad(why: str) -> InputError:
        return InputError(f"{where}: manifest {MANIFEST_NAME} {why}")

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise bad(f"is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise bad(f"does not have schema {SCHEMA}")
    records = doc.get("entries")
    if not isinstance(records, list):
        raise bad("has no list of entries")
    entries = []
    for n, r in enumerate(records):
        entry = _entry(r) if isinstance(r, dict) else None
        if entry is None:
            raise bad(f"entry {n} is malformed")
        entries.append(entry)
    return entries


def _entry(r: dict) -> Entry | None:
    path, kind = r.get("path"), r.get("type")
    if not isinstance(path, str) or not path:
        return None
    if kind == "file" and type(r.get("size")) is int and isinstance(r.get("sha256"), str):
        return Entry(path, kind, r["size"], r["sha256"])
    if kind == "link" and isinstance(r.get("target"), str):
        return Entry(path, kind, note=r["target"])
    return Entry(path, kind) if kind == "dir" else None


def compare(expected: list[Entry], actual: list[Entry]) -> list[str]:
    """What differs between the manifest and the tree read back, one line each, sorted by path."""
    want = {e.path: e for e in expected}
    have = {e.path: e for e in actual}
    problems = []
    for path in sorted(want.keys() | have.keys()):
        w, h, name = want.get(path), have.get(path), printable(path)
        if h is None:
            problems.append(f"missing: {name}")
        elif h.kind == "other":
            problems.append(f"{name}: {h.note}")
        elif w is None:
            problems.append(f"extra: {name} (not in the manifest)")
        elif w.kind != h.kind:
            problems.append(f"{name}: a {h.kind}, the manifest says a {w.kind}")
        elif w.kind == "link" and w.note != h.note:
            problems.append(f"{name}: link to {h.note!r}, the manifest says {w.note!r}")
        elif w.kind == "file" and w.size != h.size:
            problems.append(f"{name}: {h.size} bytes, the manifest says {w.size}")
        elif w.kind == "file" and w.sha256 != h.sha256:
            problems.append(
                f"{name}: content differs (sha256 {h.sha256[:12]}..., manifest {w.sha256[:12]}...)"
            )
    return problems
