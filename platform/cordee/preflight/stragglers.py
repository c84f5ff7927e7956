"""Stragglers: ranks that take markedly longer than the others for the same fixed work.

A synchronous job runs at the pace of its slowest rank, so one slow GPU or one busy CPU slows
every step. Each rank's time is compared to the median over all ranks (robust: a few stragglers
do not move it), the way NVIDIA resiliency-ext scores ranks against a reference rank. Pure
function, no I/O: the collector calls it with every rank's time.
"""

from __future__ import annotations

import math
import statistics

from cordee.errors import InputError, shown

MIN_RANKS = 3  # with two ranks the median is their mean: neither can stand out from "the others"


def find_stragglers(times: dict[int, float], ratio: float) -> dict[int, float]:
    """{rank: time / median time} for every rank slower than `ratio` x the median (strictly);
    {} with fewer than three ranks, or when the median is zero (nothing was measured)."""
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, int | float)
        or not math.isfinite(ratio)
        or ratio <= 0
    ):
        raise InputError(f"straggler ratio must be a finite number > 0, got {shown(ratio)}")
    for rank, seconds in times.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise InputError(f"straggler times: {shown(rank)} is not a rank number")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise InputError(f"straggler time of rank {rank} must be a finite number, got {shown(seconds)}")
        if seconds < 0:
            raise InputError(f"straggler time of rank {rank} must be >= 0, got {shown(seconds)}")
    if len(times) < MIN_RANKS:
        return {}
    median = statistics.median(times.values())
    if median <= 0:
        return {}
    return {rank: t / median for rank, t in sorted(times.items()) if t / median > ratio}
