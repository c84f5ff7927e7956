"""The checkpoint directory's layout, read without torch: step directory names, the manifest
(cordee.json) and its checks, the `latest` pointer, and the order load_latest tries checkpoints
in. The layout itself is described in checkpoint.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cordee.errors import InputError, one_line
from cordee.fileio import ReadError, read_bounded

SCHEMA = "cordee.checkpoint/1"
MANIFEST = "cordee.json"
LATEST = "latest"
TMP_PREFIX = ".tmp-"
STEP_DIR = re.compile(r"step-([0-9]{8,12})", re.ASCII)
TMP_DIR = re.compile(r"\.tmp-step-[0-9]{8,12}", re.ASCII)
TMP_LATEST = re.compile(r"\.latest\.[A-Za-z0-9_]+\.tmp", re.ASCII)  # write_atomic's, if killed
MAX_STEP = 10**12 - 1


def step_dir_name(step: int) -> str:
    if not 0 <= step <= MAX_STEP:
        raise InputError(f"checkpoint step {step}: must be 0..{MAX_STEP}")
    return f"step-{step:08d}"


def _step_of(name: str) -> int | None:
    m = STEP_DIR.fullmatch(name)
    return int(m.group(1)) if m else None


def read_manifest(path: Path) -> dict:
    """cordee.json of a step directory, checked; ValueError with the reason otherwise."""
    try:
        doc = json.loads(read_bounded(path / MANIFEST, 1 << 20))
    except ReadError as e:
        raise ValueError(e.reason) from None
    except ValueError as e:  # not JSON, not UTF-8, an integer of more than 4,300 digits
        raise ValueError(f"{MANIFEST} is not JSON ({one_line(str(e))[:120]})") from None
    except RecursionError:  # json nests by recursion
        raise ValueError(f"{MANIFEST} is not JSON (nested too deeply)") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("complete") is not True:
        raise ValueError(f"{MANIFEST} is not a complete {SCHEMA} manifest")
    if not isinstance(doc.get("step"), int) or not isinstance(doc.get("world_size"), int):
        raise ValueError(f"{MANIFEST} lacks an integer step or world_size")
    files = doc.get("files")
    if not isinstance(files, dict) or not isinstance(doc.get("extra"), dict):
        raise ValueError(f"{MANIFEST} lacks its files or extra")
    if not all(_plain_name(n) and isinstance(size, int) for n, size in files.items()):
        raise ValueError(f"{MANIFEST}: files must map plain file names to sizes")
    return doc


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def check_files(path: Path, files: dict) -> None:
    """Every file the save wrote is there with its size: catches truncated or missing files
    before DCP reads anything (a checksum would need reading the whole checkpoint)."""
    for name, size in files.items():
        try:
            actual = (path / name).stat().st_size
        except OSError as e:
            raise ValueError(f"{name}: {e.strerror or e}") from None
        if actual != size:
            raise ValueError(f"{name} has {actual} bytes, {size} were written")


def _read_latest(directory: Path) -> str | None:
    try:
        name = read_bounded(directory / LATEST, 256).decode("ascii", "replace").strip()
    except ReadError:
        return None
    return name if STEP_DIR.fullmatch(name) else None


def _step_dirs(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the step directories, newest first (symlinks and other names ignored)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    found = [(_step_of(e.name), Path(e.path)) for e in entries if e.is_dir(follow_symlinks=False)]
    return sorted(((s, p) for s, p in found if s is not None), key=lambda sp: sp[0], reverse=True)


def load_order(directory: Path) -> tuple[list[tuple[int, Path]], str | None]:
    """Step directories in the order load_latest tries them: the one `latest` names, then older
    ones, newest first (newer ones belong to a timeline abandoned by an earlier fallback or a
    crash before `latest` moved). Also a note when `latest` is unusable."""
    dirs = _step_dirs(directory)
    name = _read_latest(directory)
    step = _step_of(name) if name else None
    if step is not None and any(s == step for s, _ in dirs):
        return [(s, p) for s, p in dirs if s <= step], None
    note = None
    if (directory / LATEST).exists() and dirs:
        note = f"{directory / LATEST} names no step directory; trying every one, newest first"
    return dirs, note


def latest_step(directory: str | os.PathLike) -> int | None:
    """The step of the checkpoint load_latest would try first (`latest`, else the newest step
    directory with a complete manifest); None if there is none. Files are not verified."""
    for step, path in load_order(Path(directory))[0]:
        try:
            read_manifest(path)
        except ValueError:
            continue
        return step
    return None
