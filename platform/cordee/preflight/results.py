"""Preflight vocabulary shared by every check, the runner and the reports: statuses, levels, scopes,
one Result per finding, one Check per test, and the exit code of a set of results.

No torch, no I/O: the quick level and the report writers import this module."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cordee.errors import InputError, shown

STATUSES = ("ok", "skip", "warn", "fail", "error")  # increasing severity
LEVELS = ("quick", "standard", "long")  # each includes the ones before it
SCOPES = ("rank", "node", "job")

# Exit codes of a preflight run (ARCHITECTURE.md exit codes): 0 ok, 1 warnings, 2 failures, 3 error.
_EXIT_BY_STATUS = {"ok": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}

DETAIL_MAX = 500  # characters; a detail is one line in a table, a JUnit message, a log line


def severity(status: str) -> int:
    """Position of a status in STATUSES (higher is worse); ValueError on an unknown status."""
    return STATUSES.index(status)


def worst(statuses: Iterable[str]) -> str:
    """The most severe of some statuses ("ok" when there are none)."""
    return max(statuses, key=severity, default="ok")


@dataclass(frozen=True)
class Result:
    """One finding of one check, about one rank, one node or the whole job."""

    check: str  # e.g. "gpu.ecc", "collective.all_reduce.inter", "isolation", "straggler"
    status: str  # one of STATUSES
    node: str = ""  # hostname the result is about ("" for job-wide)
    rank: int | None = None  # global rank the result is about (None for node/job scope)
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    detail: str = ""  # one line
    duration_s: float = 0.0
    data: dict | None = None  # extra structured data (e.g. sweep rows for the plot), JSON-able

    def as_dict(self) -> dict:
        return {
            "check": self.check,
            "status": self.status,
            "node": self.node,
            "rank": self.rank,
            "value": _json_float(self.value),
            "threshold": _json_float(self.threshold),
            "unit": self.unit,
            "detail": self.detail,
            "duration_s": _json_float(self.duration_s) or 0.0,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Result:
        """A Result from as_dict() output (e.g. received over the side channel or read from a JSON
        document). InputError naming the field on anything malformed: the input may come from a file
        or a peer process, never trusted."""
        if not isinstance(d, dict):
            raise InputError(f"preflight result: expected an object, got {type(d).__name__}")
        unknown = set(d) - _FIELDS
        if unknown:
            raise InputError(f"preflight result: unknown field {shown(sorted(unknown)[0])}")
        check = _field(d, "check", str, required=True)
        if not check:
            raise InputError("preflight result: field 'check' is empty")
        status = _field(d, "status", str, required=True)
        if status not in STATUSES:
            raise InputError(
                f"preflight result {shown(check)}: status {shown(status)} is not one of {', '.join(STATUSES)}"
            )
        rank = d.get("rank")
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 0):
            raise InputError(f"preflight result {shown(check)}: rank {shown(rank)} is not a rank number")
        return cls(
            check=check,
            status=status,
            node=_field(d, "node", str) or "",
            rank=rank,
            value=_number(d, "value", check),
            threshold=_number(d, "threshold", check),
            unit=_field(d, "unit", str) or "",
            detail=_field(d, "detail", str) or "",
            duration_s=_number(d, "duration_s", check) or 0.0,
            data=_field(d, "data", dict),
        )


_FIELDS = {"check", "status", "node", "rank", "value", "threshold", "unit", "detail", "duration_s", "data"}


def _json_float(value: float | None) -> float | None:
    # JSON has no NaN/Infinity; a non-finite measurement is reported as missing.
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _field(d: dict, name: str, kind: type, required: bool = False) -> Any:
    value = d.get(name)
    if value is None:
        if required:
            raise InputError(f"preflight result: field {name!r} is missing")
        return None
    if not isinstance(value, kind):
        raise InputError(f"preflight result: field {name!r} must be {kind.__name__}, got {shown(value)}")
    return value


def _number(d: dict, name: str, check: str) -> float | None:
    value = d.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(
            f"preflight result {shown(check)}: field {name!r} must be a number, got {shown(value)}"
        )
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float (JSON allows 10**400)
        raise InputError(f"preflight result {shown(check)}: field {name!r} is too large a number") from None


@dataclass(frozen=True)
class Check:
    """One preflight test. `run(ctx)` gets the runner's context (launch env, node, rank, system profile,
    device, process groups, fault switch) and returns its Results.

    scope: "node" runs once per node (local rank 0 only), "rank" on every rank, "job" on every rank
    together (collectives: every rank must call it). level: the lowest level that includes it.
    needs_torch: False for checks the quick level may run (torch is never imported for those)."""

    name: str
    scope: str
    level: str
    timeout_s: float
    run: Callable[[Any], list[Result]]
    needs_torch: bool = True

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"check {self.name}: scope {self.scope!r} is not one of {SCOPES}")
        if self.level not in LEVELS:
            raise ValueError(f"check {self.name}: level {self.level!r} is not one of {LEVELS}")
        if not self.timeout_s > 0:
            raise ValueError(f"check {self.name}: timeout_s must be > 0")


def level_includes(level: str, check_level: str) -> bool:
    """True when running `level` includes checks of `check_level` (long includes standard and quick)."""
    return LEVELS.index(check_level) <= LEVELS.index(level)


def exit_code(results: Iterable[Result]) -> int:
    """3 if any error, else 2 if any fail, else 1 if any warn, else 0."""
    return max((_EXIT_BY_STATUS[r.status] for r in results), default=0)
