"""Storage traps, as plain functions that return findings: cache directories on a shared
filesystem (which filesystem a path is on: cordee.storage.mounts), free space and inodes where
checkpoints go, and the Lustre layout of the data and checkpoint directories (cordee.storage.lustre).

Why (cscs-docs guides/storage.md and container-engine pages): caches that compilers and libraries
write (Triton kernels, TorchInductor, Hugging Face downloads, CUDA's JIT cache) on a shared
filesystem make every rank of every node hit the metadata servers with small files and locks, and
jobs fail in odd ways when two nodes write the same cache entry; CSCS sets CUDA_CACHE_DISABLE=1. A
checkpoint that does not fit fails after the save has already cost its time.

Statuses are those of cordee preflight: ok, skip, warn, fail.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cordee.numbers import byte_size
from cordee.storage.mounts import Mount, existing_ancestor, is_shared, mount_of, read_mounts

# Free space and inodes where checkpoints go, as a percentage of the filesystem: below WARN a
# warning, below FAIL a failure. Override with CORDEE_FREE_WARN_PCT / CORDEE_FREE_FAIL_PCT.
FREE_WARN_PCT = 10.0
FREE_FAIL_PCT = 2.0
WARN_VAR, FAIL_VAR = "CORDEE_FREE_WARN_PCT", "CORDEE_FREE_FAIL_PCT"


@dataclass(frozen=True)
class Finding:
    check: str  # storage.cache.HF_HOME, storage.space, storage.inodes, storage.stripe.data, ...
    status: str  # ok | skip | warn | fail
    path: str
    detail: str  # one line
    value: float | None = None
    threshold: float | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        from cordee.errors import one_line

        object.__setattr__(self, "detail", one_line(self.detail))  # paths come from the user

    def as_dict(self) -> dict:
        return {"check": self.check, "status": self.status, "path": self.path, "detail": self.detail,
                "value": self.value, "threshold": self.threshold, "unit": self.unit}  # fmt: skip


# --- cache directories -------------------------------------------------------------------------


def cache_dirs(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, directory) of each cache a training job writes, from its variable or the library's
    default: Triton (TRITON_CACHE_DIR, default ~/.triton/cache), TorchInductor
    (TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_$USER), Hugging Face (HF_HOME, default
    $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface; HF_DATASETS_CACHE, default HF_HOME/datasets),
    CUDA's JIT cache (CUDA_CACHE_PATH, default ~/.nv/ComputeCache)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    user = environ.get("USER") or environ.get("LOGNAME") or _login()
    triton_home = environ.get("TRITON_HOME") or home
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    hf_home = environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return [
        (
            "TRITON_CACHE_DIR",
            environ.get("TRITON_CACHE_DIR") or os.path.join(triton_home, ".triton", "cache"),
        ),
        ("TORCHINDUCTOR_CACHE_DIR", environ.get("TORCHINDUCTOR_CACHE_DIR") or f"/tmp/torchinductor_{user}"),
        ("HF_HOME", hf_home),
        ("HF_DATASETS_CACHE", environ.get("HF_DATASETS_CACHE") or os.path.join(hf_home, "datasets")),
        ("CUDA_CACHE_PATH", environ.get("CUDA_CACHE_PATH") or os.path.join(home, ".nv", "ComputeCache")),
    ]


def _login() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return str(os.getuid())


def cache_findings(environ: Mapping[str, str], mounts: list[Mount]) -> list[Finding]:
    """One finding per cache: warn when it is on a shared filesystem (the CUDA cache only while
    CUDA_CACHE_DISABLE is not 1), ok otherwise, skip when its place cannot be told."""
    found = []
    for name, path in cache_dirs(environ):
        check, where = f"storage.cache.{name}", _mount_or_why(path, mounts)
        if isinstance(where, str):
            found.append(Finding(check, "skip", path, where))
            continue
        on = f"{path} is on {where.mountpoint} ({where.fstype})"
        if name == "CUDA_CACHE_PATH" and environ.get("CUDA_CACHE_DISABLE") == "1":
            found.append(
                Finding(check, "ok", path, f"CUDA_CACHE_DISABLE=1: the JIT cache is not written ({on})")
            )
        elif is_shared(where.fstype):
            fix = ("set CUDA_CACHE_DISABLE=1" if name == "CUDA_CACHE_PATH"
                   else f"set {name} to a node-local directory (e.g. /tmp or /dev/shm)")  # fmt: skip
            found.append(Finding(check, "warn", path, f"{on}, a shared filesystem: {fix}"))
        else:
            found.append(Finding(check, "ok", path, f"{on}, node-local"))
    return found


def _mount_or_why(path: str, mounts: list[Mount]) -> Mount | str:
    try:
        found = mount_of(path, mounts)
    except (OSError, ValueError) as e:  # a NUL byte, a name longer than the system allows
        return f"cannot resolve {path!r}: {e}"
    return found if found is not None else f"no mount holds {path!r}"


# --- free space and inodes ---------------------------------------------------------------------


def thresholds(environ: Mapping[str, str]) -> tuple[float, float]:
    """(warn %, fail %) from CORDEE_FREE_WARN_PCT / CORDEE_FREE_FAIL_PCT or the defaults (10, 2).
    InputError on a value that is not a percentage, or fail above warn."""
    import math

    from cordee.errors import InputError, shown

    values = []
    for var, default in ((WARN_VAR, FREE_WARN_PCT), (FAIL_VAR, FREE_FAIL_PCT)):
        text = environ.get(var)
        try:
            value = default if text is None else float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value <= 100:
            raise InputError(f"{var}={shown(text)}: must be a percentage 0..100")
        values.append(value)
    if values[1] > values[0]:
        raise InputError(f"{FAIL_VAR} ({values[1]:g}) must not be above {WARN_VAR} ({values[0]:g})")
    return values[0], values[1]


def space_findings(
    path: str, warn_pct: float = FREE_WARN_PCT, fail_pct: float = FREE_FAIL_PCT
) -> list[Finding]:
    """Free space and free inodes (what an unprivileged user may use) of the filesystem where
    `path` is or would be created, as a percentage: below fail_pct fail, below warn_pct warn."""
    try:
        where = existing_ancestor(path)
        st = os.statvfs(where)
    except (OSError, ValueError) as e:
        return [Finding("storage.space", "skip", path, f"cannot statvfs {path!r}: {e}")]
    at = path if where == os.path.realpath(os.path.abspath(path)) else f"{path} (not there yet: {where})"
    found = []
    for check, free, total, unit in (
        ("storage.space", st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, "bytes"),
        ("storage.inodes", st.f_favail, st.f_files, "inodes"),
    ):  # fmt: skip
        if total == 0:  # btrfs, some FUSE filesystems: no inode count reported
            found.append(Finding(check, "skip", path, f"{at}: the filesystem reports no {unit} count"))
            continue
        pct = 100.0 * free / total
        status = "fail" if pct < fail_pct else "warn" if pct < warn_pct else "ok"
        limit = fail_pct if status == "fail" else warn_pct
        shown_free = byte_size(free) if unit == "bytes" else f"{free:,} inodes"
        detail = (
            f"{at}: {shown_free} free, {pct:.1f}% of {byte_size(total) if unit == 'bytes' else f'{total:,}'}"
        )
        if status != "ok":
            detail += f" (below {limit:g}%: checkpoints may not fit)"
        found.append(Finding(check, status, path, detail, value=pct, threshold=limit, unit="%"))
    return found


# --- Lustre layout -----------------------------------------------------------------------------


def stripe_finding(role: str, path: str, mounts: list[Mount], environ: Mapping[str, str],
                   timeout_s: float | None = None) -> Finding:  # fmt: skip
    """The default layout of directory `path` (role: data or checkpoints) against the recommended
    PFL: skip when it is not on Lustre or lfs is missing, warn with the fix when it differs."""
    from cordee.errors import CordeeError
    from cordee.storage import lustre

    check = f"storage.stripe.{role}"
    where = _mount_or_why(path, mounts)
    if isinstance(where, str):
        return Finding(check, "skip", path, f"skipped: {where}")
    if where.fstype != "lustre":
        return Finding(check, "skip", path, f"skipped: {path} is on {where.fstype}, not Lustre")
    if not os.path.isdir(path):
        return Finding(check, "skip", path, f"skipped: {path} is not a directory (yet)")
    lfs = lustre.find_lfs(environ)
    if lfs is None:
        return Finding(check, "skip", path, f"skipped: {path} is on Lustre but lfs is not on PATH")
    try:
        layout = lustre.getstripe(path, lfs=lfs, timeout_s=timeout_s or lustre.LFS_TIMEOUT_S)
    except CordeeError as e:
        return Finding(check, "warn", path, f"layout not checked: {e}")
    diffs = lustre.compare(layout)
    if not diffs:
        return Finding(check, "ok", path, f"{path}: {layout.describe()} (the recommended layout)")
    return Finding(check, "warn", path, f"{path}: {'; '.join(diffs)}; fix: {lustre.fix_command(path)}")


def storage_findings(environ: Mapping[str, str], *, data_dir: str | None, ckpt_dir: str | None,
                     mounts: list[Mount] | None = None) -> list[Finding]:  # fmt: skip
    """Every storage check: caches; the layout of the data and checkpoint directories; free space
    and inodes where checkpoints go. A directory not given is a skip saying how to give it."""
    mounts = read_mounts() if mounts is None else mounts
    found = cache_findings(environ, mounts)
    for role, path, how in (("data", data_dir, "--data DIR or CORDEE_DATA_DIR"),
                            ("checkpoints", ckpt_dir, "--checkpoints DIR or CORDEE_CKPT_DIR")):  # fmt: skip
        if path:
            found.append(stripe_finding(role, path, mounts, environ))
        else:
            found.append(Finding(f"storage.stripe.{role}", "skip", "", f"no {role} directory given ({how})"))
    if ckpt_dir:
        found += space_findings(ckpt_dir, *thresholds(environ))
    else:
        found.append(Finding("storage.space", "skip", "", "no checkpoint directory given (--checkpoints DIR "
                                                          "or CORDEE_CKPT_DIR)"))  # fmt: skip
    return found
