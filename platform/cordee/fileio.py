"""Atomic file writes: a temporary file beside the target, then a rename (ARCHITECTURE.md: nothing is lost)."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str | os.PathLike, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one rename; readers see the old file or the new one, never a
    part. Mode 0644 by default (EDFs, env files and build files are read by the user's other
    tools; mkstemp alone would give 0600). Nothing is left behind on failure; the directory must
    exist. Raises OSError."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
