"""A throw-away directory tree for one `cordee` run, and snapshots to see what the run changed.

    <run>/home        HOME                 <run>/xdg/*   XDG_{CONFIG,CACHE,DATA,STATE}_HOME, XDG_RUNTIME_DIR
    <run>/edf         EDF_PATH             <run>/root    CORDEE_ROOT: a copy of the repo's images/, recipes/
    <run>/cwd         working directory, with the hostile files below (HOSTILE_FILES)
    <run>/tmp         TMPDIR: must be empty again when the run is over
    <run>/bin         an empty directory (a PATH on which no tool is found)

Strings in a command may name these places with placeholders ({RUN}, {CWD}, {ROOT}, {EDF},
{HOME}, {SENTINEL}): hypothesis prints them as written, the sandbox expands them. The sentinel is
one directory outside every sandbox (session-wide); `{CWD}/outside` is a symlink to it.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
NAME_MAX = 255


class Symlink(NamedTuple):
    target: str


class Fifo(NamedTuple):
    pass


class Directory(NamedTuple):
    pass


# What every run finds in its working directory: the files a hostile user points cordee at.
HOSTILE_FILES: dict[str, bytes | Symlink | Fifo | Directory] = {
    "fifo": Fifo(),
    "fifo.yaml": Fifo(),
    "fifo.toml": Fifo(),
    "zero.yaml": Symlink("/dev/zero"),
    "zero.toml": Symlink("/dev/zero"),
    "mem.toml": Symlink("/proc/self/mem"),  # a regular file that not even root can read
    "dir.yaml": Directory(),
    "dir.toml": Directory(),
    "loop.toml": Symlink("loop.toml"),
    "dangling.yaml": Symlink("no-such-target"),
    "binary.yaml": b"\xff\xfe\x00kind: container\n\x00\x01",
    "binary.toml": b'image = "\xff\xfe"\n\x00',
    "empty.yaml": b"",
    "empty.toml": b"",
    "big.yaml": b"#" * ((1 << 20) + 1) + b"\n",
    "outside": Symlink("{SENTINEL}"),
}

SENTINEL_FILES = {"victim.txt": b"must survive\n", "sub/victim.txt": b"must survive too\n"}


@functools.cache
def session_sentinel() -> Path:
    """The session's directory outside every sandbox; no run may change it."""
    path = Path(tempfile.mkdtemp(prefix="cordee-fuzz-sentinel-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    restore_sentinel(path)
    return path


def restore_sentinel(path: Path) -> None:
    """Put back what a run broke, so that the next run is checked on the same files."""
    for rel, data in SENTINEL_FILES.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)


class Sandbox:
    """One run's directory tree (see the module's docstring), made fresh for every run."""

    def __init__(self, sentinel: Path) -> None:
        self.run = Path(tempfile.mkdtemp(prefix="cordee-fuzz-"))
        self.sentinel = sentinel
        self.places = {
            "{RUN}": str(self.run),
            "{CWD}": str(self.run / "cwd"),
            "{ROOT}": str(self.run / "root"),
            "{EDF}": str(self.run / "edf"),
            "{HOME}": str(self.run / "home"),
            "{SENTINEL}": str(sentinel),
        }
        for sub in ("home", "edf", "cwd", "tmp", "bin", "xdg/config", "xdg/cache", "xdg/data", "xdg/state"):
            (self.run / sub).mkdir(parents=True)
        (self.run / "xdg/runtime").mkdir(mode=0o700)
        for sub in ("images", "recipes"):
            shutil.copytree(REPO / sub, self.run / "root" / sub)
        for rel, what in HOSTILE_FILES.items():
            self.put(f"cwd/{rel}", what)

    @property
    def cwd(self) -> Path:
        return self.run / "cwd"

    @property
    def tmp(self) -> Path:
        return self.run / "tmp"

    def expand(self, text: str) -> str:
        for place, path in self.places.items():
            text = text.replace(place, path)
        return text

    def put(self, rel: str, what: bytes | str | Symlink | Fifo | Directory) -> None:
        """Create `rel` (relative to the run directory; placeholders in a link target or content)."""
        path = self.run / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Symlink):
            os.symlink(self.expand(what.target), path)
        elif isinstance(what, Fifo):
            os.mkfifo(path)
        elif isinstance(what, Directory):
            path.mkdir(exist_ok=True)
        else:
            data = what.encode("utf-8", "surrogateescape") if isinstance(what, str) else what
            for place, value in self.places.items():
                data = data.replace(place.encode(), value.encode())
            path.write_bytes(data)

    def environ(self, marker: str) -> dict[str, str]:
        """A clean environment for the run: nothing from the test process's own (Slurm, NCCL ...)."""
        xdg = self.run / "xdg"
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.run / "home"),
            "USER": "fuzz",
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.tmp),
            "XDG_CONFIG_HOME": str(xdg / "config"),
            "XDG_CACHE_HOME": str(xdg / "cache"),
            "XDG_DATA_HOME": str(xdg / "data"),
            "XDG_STATE_HOME": str(xdg / "state"),
            "XDG_RUNTIME_DIR": str(xdg / "runtime"),
            "EDF_PATH": str(self.run / "edf"),
            "CORDEE_ROOT": str(self.run / "root"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONFAULTHANDLER": "1",  # a hung run gets SIGABRT at the deadline: its stack says where
            "CORDEE_FUZZ_RUN": marker,  # inherited by everything the run starts (leftover detection)
        }

    def remove(self) -> None:
        shutil.rmtree(self.run, ignore_errors=True)


Entry = tuple[str, int, int, int, str]  # kind, size, mtime_ns, mode, link target


def snapshot(top: Path, skip: tuple[Path, ...] = ()) -> dict[str, Entry]:
    """Every entry under `top` (symlinks not followed, FIFOs not opened): absolute path -> entry."""
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if link else "file"
            mtime = 0 if kind == "dir" else st.st_mtime_ns  # a directory's mtime changes with its entries
            entries[path] = (kind, st.st_size if kind == "file" else 0, mtime, st.st_mode, link)
    return entries


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[tuple[str, str]]:
    """(path, 'added' | 'removed' | 'changed'), sorted."""
    out = [(p, "removed") for p in before if p not in after]
    out += [(p, "added") for p in after if p not in before]
    out += [(p, "changed") for p in before if p in after and before[p] != after[p]]
    return sorted(out)


def allowed(path: str, kind: str, may_write: tuple[str, ...], after: dict[str, Entry]) -> bool:
    """A change at `path` is allowed at or under a path the verb may write, and so is the creation
    of the directories leading to one (`--out a/b/c` creates a and a/b)."""
    for target in may_write:
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return True
        if kind == "added" and after.get(path, ("",))[0] == "dir" and target.startswith(path + "/"):
            return True
    return False


def leftover_temp_files(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
