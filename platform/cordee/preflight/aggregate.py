"""Verdicts that need every rank's results, made where they all arrive (the collector): collective
bandwidth against the profile's thresholds, and stragglers among the ranks' timed work.

Bandwidth thresholds apply to message sizes >= the profile's large_message_bytes only: small
messages measure latency, and pass/fail on an average over all sizes would hide a bad link
(nccl-tests doc/PERFORMANCE.md). Pure functions: results in, results out."""

from __future__ import annotations

import statistics
from dataclasses import replace

from cordee.preflight.results import Result, worst

STRAGGLER_CHECK = "straggler"
WORK_CHECK = "straggler.work"


def finalize(results: list[Result], profile) -> list[Result]:
    """The results as the report shows them: collectives judged, stragglers named."""
    out = [judge_collective(r, profile) if _is_sweep(r) else r for r in results]
    return out + stragglers(results, profile)


def _is_sweep(r: Result) -> bool:
    return r.check.startswith("collective.") and bool((r.data or {}).get("rows"))


def judge_collective(r: Result, profile) -> Result:
    """The lowest busbw at sizes >= large_message_bytes against the metric's threshold; the
    status is the worse of that and the verification's."""
    metric = r.data.get("metric", "")
    large = [row for row in r.data["rows"] if row.get("bytes", 0) >= profile.large_message_bytes]
    limit = profile.threshold(metric)
    if not large:
        note = f"; no size >= {profile.large_message_bytes} B: bandwidth not judged"
        return replace(r, detail=r.detail + note)
    low = min(large, key=lambda row: row["busbw_gbps"])
    value = float(low["busbw_gbps"])
    if limit is None:
        note = f"; lowest busbw at >= {profile.large_message_bytes} B: {value:.3g} GB/s (no threshold)"
        return replace(r, value=value, detail=r.detail + note)
    status = worst([r.status, *(limit.judge(float(row["busbw_gbps"])) for row in large)])
    note = (
        f"; lowest busbw at >= {profile.large_message_bytes} B: {value:.3g} GB/s at {low['bytes']} B "
        f"(must be >= {limit.fail:g} GB/s; {limit.source})"
    )
    data = {**r.data, "kind": limit.kind}
    return replace(r, status=status, value=value, threshold=limit.fail, detail=r.detail + note, data=data)


def stragglers(results: list[Result], profile) -> list[Result]:
    """Ranks whose fixed work took more than the profile's straggler_ratio x the median time,
    each named with its ratio; or one result saying there were none."""
    from cordee.preflight.stragglers import find_stragglers

    work = {r.rank: r for r in results if r.check == WORK_CHECK and r.rank is not None and r.value}
    if not work:
        return []
    limit = profile.threshold("straggler_ratio")
    times = {rank: float(r.value) for rank, r in work.items()}
    if len(times) < 3:
        return [
            Result(STRAGGLER_CHECK, "skip", detail=f"{len(times)} ranks: stragglers need >= 3 to compare")
        ]
    median = statistics.median(times.values())
    if limit is None:
        return [Result(STRAGGLER_CHECK, "skip", detail="the system profile sets no straggler_ratio")]
    ratio = limit.warn if limit.warn is not None else limit.fail
    found = find_stragglers(times, ratio)
    data = {"metric": "straggler_ratio", "kind": limit.kind, "median_s": median}
    if not found:
        slowest = max(times.values()) / median if median else 1.0
        detail = (
            f"{len(times)} ranks, none slower than {ratio:g} x the median ({median:.3f} s); "
            f"slowest {slowest:.2f} x"
        )
        return [
            Result(
                STRAGGLER_CHECK,
                "ok",
                value=slowest,
                threshold=limit.fail,
                unit="x median",
                detail=detail,
                data=data,
            )
        ]
    out = []
    for rank, r_ratio in sorted(found.items(), key=lambda kv: -kv[1]):
        w = work[rank]
        detail = (
            f"rank {rank} on {w.node} took {r_ratio:.2f} x the median time for the same work "
            f"({times[rank]:.3f} s vs {median:.3f} s; limit {limit.fail:g} x, {limit.source})"
        )
        out.append(
            Result(
                STRAGGLER_CHECK,
                limit.judge(r_ratio),
                w.node,
                rank,
                r_ratio,
                limit.fail,
                "x median",
                detail,
                data=data,
            )
        )
    return out
