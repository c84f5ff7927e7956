"""One parser for every integer cordee reads from the environment, a spec, an EDF or a profile.

Only ASCII decimal digits count: `str.isdigit()` accepts superscripts that `int()` refuses, and
`int()` accepts other scripts' digits that Slurm, NCCL and CUDA would not; a value longer than
MAX_DIGITS is refused before `int()` sees it (CPython refuses to convert more than 4,300 digits,
and a 64-bit field never needs more than 19 or 20). Bounds are part of the call, so a count that
would build a list of a billion entries is refused where it is read.
"""

from __future__ import annotations

import re

from cordee.errors import InputError, shown

MAX_DIGITS = 20  # 2**64 has 20 digits
_INT = re.compile(rf"[+-]?[0-9]{{1,{MAX_DIGITS}}}", re.ASCII)


def as_int(text: str) -> int | None:
    """The integer `text` spells in ASCII decimal (surrounding blanks allowed), or None."""
    text = text.strip()
    return int(text) if _INT.fullmatch(text) else None


def parse_int(text: str, what: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """`text` as an integer within [lo, hi]; otherwise InputError naming `what` (e.g. the variable)
    and what is allowed."""
    value = as_int(text)
    if value is None:
        raise InputError(f"{what}={shown(text)} is not an integer (ASCII digits, at most {MAX_DIGITS})")
    if lo is not None and value < lo:
        raise InputError(f"{what}={shown(text)} must be >= {lo}")
    if hi is not None and value > hi:
        raise InputError(f"{what}={shown(text)} must be <= {hi}")
    return value


def byte_size(count: float) -> str:
    """A byte count or rate for people: 36 B, 1.5 MiB, 66.0 GiB."""
    units, i = ("B", "KiB", "MiB", "GiB", "TiB"), 0
    while count >= 1024 and i < len(units) - 1:
        count, i = count / 1024, i + 1
    return f"{count:.0f} B" if i == 0 else f"{count:.1f} {units[i]}"
