"""Storage checks of `cordee preflight` at the standard level, once per node (no torch): caches on a
shared filesystem, the Lustre layout of the data and checkpoint directories, free space and inodes
where checkpoints go (cordee.storage.checks, which `cordee env check` runs too).

The directories come from the job's environment: CORDEE_DATA_DIR and CORDEE_CKPT_DIR (a check whose
directory is not set is skipped and says so); thresholds from CORDEE_FREE_WARN_PCT and
CORDEE_FREE_FAIL_PCT (percent free, default 10 and 2)."""

from __future__ import annotations

from cordee.preflight.results import DETAIL_MAX, Check, Result

DATA_VAR, CKPT_VAR = "CORDEE_DATA_DIR", "CORDEE_CKPT_DIR"
LFS_TIMEOUT_S = 20.0  # per directory; the check's own timeout covers both directories


def _results(findings) -> list[Result]:
    return [
        Result(f.check, f.status, value=f.value, threshold=f.threshold, unit=f.unit,
               detail=f.detail[:DETAIL_MAX], data={"path": f.path} if f.path else None)
        for f in findings
    ]  # fmt: skip


def _caches(ctx) -> list[Result]:
    from cordee.storage.checks import cache_findings
    from cordee.storage.mounts import read_mounts

    return _results(cache_findings(ctx.environ, read_mounts()))


def _layout(ctx) -> list[Result]:
    from cordee.storage.checks import Finding, stripe_finding
    from cordee.storage.mounts import read_mounts

    mounts, found = read_mounts(), []
    for role, var in (("data", DATA_VAR), ("checkpoints", CKPT_VAR)):
        path = ctx.environ.get(var)
        if path:
            found.append(stripe_finding(role, path, mounts, ctx.environ, LFS_TIMEOUT_S))
        else:
            found.append(Finding(f"storage.stripe.{role}", "skip", "", f"{var} is not set"))
    return _results(found)


def _space(ctx) -> list[Result]:
    from cordee.storage.checks import space_findings, thresholds

    path = ctx.environ.get(CKPT_VAR)
    if not path:
        return [Result("storage.space", "skip", detail=f"{CKPT_VAR} is not set")]
    return _results(space_findings(path, *thresholds(ctx.environ)))


def storage_checks() -> list[Check]:
    return [
        Check("storage.caches", "node", "standard", 15.0, _caches, needs_torch=False),
        Check("storage.stripe", "node", "standard", 2 * LFS_TIMEOUT_S + 10.0, _layout, needs_torch=False),
        Check("storage.space", "node", "standard", 15.0, _space, needs_torch=False),
    ]
