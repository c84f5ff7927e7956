"""Find a shared library the way a job would load it, without loading it.

Order: an explicit override (an environment variable naming the file), then the directories of
Python wheels on sys.path (torch and the nvidia-* wheels load their own copies from there before
the system's), then the dynamic linker's own order: LD_LIBRARY_PATH, the ld.so cache
(`ldconfig -p`), the standard directories. The result is the file's real path (symlinks resolved,
so the version in the file name shows) and which rule found it.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

from cordee.errors import InputError

LDCONFIG_TIMEOUT_S = 10
# ld.so's built-in search path on the distributions cordee meets (Debian/Ubuntu multiarch, RHEL/SLES lib64)
STANDARD_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
# the tag `ldconfig -p` prints for libraries of this machine's ABI
_LDCONFIG_ARCH = {"x86_64": "x86-64", "aarch64": "AArch64", "ppc64le": "ppc64le"}


class LibraryLocation(NamedTuple):
    path: str  # real path of the file
    how: str  # "override" | "wheel" | "linker"


class LibraryNotFound(InputError):
    """No file for the library: names the library and every place that was searched."""


def find_library(
    soname: str,
    *,
    override_var: str | None,
    wheel_globs: tuple[str, ...] = (),
    environ=os.environ,
) -> LibraryLocation:
    """Locate `soname` (e.g. "libnccl.so.2"). `wheel_globs` are patterns relative to each sys.path
    entry (e.g. "nvidia/nccl/lib/libnccl.so.2"). Raises LibraryNotFound when nothing is found."""
    if override_var:
        override = environ.get(override_var, "")
        if override:
            if os.path.isfile(override):
                return LibraryLocation(os.path.realpath(override), "override")
            what = "is a directory" if os.path.isdir(override) else "does not exist"
            raise LibraryNotFound(
                f"{override_var}={override}: {what}; set it to the path of the {soname} file, "
                "or unset it to search the wheels and the dynamic linker's paths"
            )
    searched: list[str] = [f"${override_var} (unset)"] if override_var else []
    found = _in_wheels(wheel_globs)
    if found:
        return LibraryLocation(found, "wheel")
    if wheel_globs:
        searched.append("wheels on sys.path: " + ", ".join(wheel_globs))
    found = _in_linker_paths(soname, environ, searched)
    if found:
        return LibraryLocation(found, "linker")
    raise LibraryNotFound(f"{soname} not found; searched: " + "; ".join(searched))


def _in_wheels(wheel_globs: tuple[str, ...]) -> str | None:
    import glob  # here, not at import: `cordee net show` starts on login nodes

    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        for pattern in wheel_globs:
            for path in sorted(glob.glob(os.path.join(glob.escape(entry), pattern))):
                if os.path.isfile(path):
                    return os.path.realpath(path)
    return None


def _in_linker_paths(soname: str, environ, searched: list[str]) -> str | None:
    ld_path = [d for d in environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for d in ld_path:
        if os.path.isfile(os.path.join(d, soname)):
            return os.path.realpath(os.path.join(d, soname))
    searched.append("LD_LIBRARY_PATH=" + (":".join(ld_path) or "(unset)"))
    cached = ld_cache_lookup(soname)
    if cached:
        return os.path.realpath(cached)
    searched.append("the ld.so cache (ldconfig -p)")
    dirs = _multiarch_dirs() + list(STANDARD_DIRS)
    for d in dirs:
        if os.path.isfile(os.path.join(d, soname)):
            return os.path.realpath(os.path.join(d, soname))
    searched.append(":".join(dirs))
    return None


def _multiarch_dirs() -> list[str]:
    triplet = getattr(sys.implementation, "_multiarch", None)
    return [f"/lib/{triplet}", f"/usr/lib/{triplet}"] if triplet else []


def ld_cache_lookup(soname: str) -> str | None:
    """The path the ld.so cache gives for `soname` for this machine's ABI, or None."""
    import platform
    import shutil

    from cordee import process

    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.isfile(p)), None
    )
    if not ldconfig:
        return None
    try:
        run = process.run([ldconfig, "-p"], timeout=LDCONFIG_TIMEOUT_S, grace=1.0)
    except OSError:
        return None
    if run.timed_out:
        return None
    return parse_ldconfig(run.stdout, soname, _LDCONFIG_ARCH.get(platform.machine()))


def parse_ldconfig(output: str, soname: str, arch_tag: str | None) -> str | None:
    """From `ldconfig -p` output, the first existing path of `soname` whose flags name `arch_tag`
    (e.g. "libfabric.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libfabric.so.1"). Entries
    without the tag are another ABI (32-bit) and are skipped; with no tag known, any entry goes."""
    for line in output.splitlines():
        name, sep, rest = line.strip().partition(" (")
        if not sep or name != soname or "=>" not in rest:
            continue
        flags, _, path = rest.partition("=>")
        path = path.strip()
        if not os.path.isfile(path):
            continue
        if arch_tag is None or arch_tag in flags:
            return path
    return None
