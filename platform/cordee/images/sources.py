"""cordee's own source, as images and uenvs install it: the files that make the package, their
hash (part of the build cache key) and a reproducible source archive for the uenv's py-cordee.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import cordee

PACKAGE_DIR = Path(cordee.__file__).resolve().parent
CHECKOUT = PACKAGE_DIR.parents[1]  # platform/cordee -> the checkout holding pyproject.toml


def source_files() -> list[tuple[str, Path]]:
    """(path relative to the checkout, file) for pyproject.toml, README.md and the package's
    .py and .toml files (code and profile data), sorted by path. Needs a checkout: an installed
    cordee has no pyproject.toml to build from."""
    from cordee.errors import InputError

    pyproject = CHECKOUT / "pyproject.toml"
    if not pyproject.is_file():
        raise InputError(f"{CHECKOUT}: no pyproject.toml; images that install cordee need a cordee checkout")
    files = [("pyproject.toml", pyproject)]
    readme = CHECKOUT / "README.md"
    if readme.is_file():
        files.append(("README.md", readme))
    for path in PACKAGE_DIR.rglob("*"):
        if path.suffix in (".py", ".toml") and path.is_file() and "__pycache__" not in path.parts:
            files.append((path.relative_to(CHECKOUT).as_posix(), path))
    return sorted(files)


def source_archive(top: str) -> bytes:
    """A .tar.gz of source_files() under `top/`, byte-identical for identical sources: fixed
    order, mtimes, owners and modes, no file name or time in the gzip header."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, path in source_files():
                data = path.read_bytes()
                info = tarfile.TarInfo(f"{top}/{rel}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
