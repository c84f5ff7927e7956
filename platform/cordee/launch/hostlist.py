"""Slurm hostlists: `expand("nid[001-003],r[1-2]n[01-02]")` -> host names, `compress(hosts)` -> expression.

The reference is Slurm itself (22.05, Debian bookworm): tests/test_hostlist.py compares both functions
with the real `scontrol show hostnames` / `scontrol show hostlist` on generated expressions.

Why not python-hostlist (PyPI, module `hostlist`), as first planned: it agrees with Slurm only on
single ranges (zero padding: width of the low end, n[01-3] -> n01 n02 n03, n[1-03] -> n1 n2 n3), it
is GPL-2.0-or-later (cordee is Apache-2.0), and elsewhere it disagrees with Slurm (tests pin these
differences against scontrol; it stays a dev-only dependency for that and for the benchmark):
- it drops duplicates unless asked not to; Slurm keeps them: n[1-2,1-2] -> n1 n2 n1 n2;
- with three or more bracket groups Slurm varies the last group fastest, then the first, second, ...:
  a[1-2]b[1-2]c[1-2] -> a1b1c1 a1b1c2 a2b1c1 a2b1c2 a1b2c1 ...; python-hostlist: a1b1c1 a1b1c2 a1b2c1 ...;
- Slurm refuses text after the last ']' (n[1-2]x); python-hostlist accepts it;
- Slurm also separates hosts by whitespace ("n1 n2"); python-hostlist keeps "n1 n2" as one name;
- its collect_hostlist sorts, drops duplicates and builds several bracket groups (r[1-2]n[1-2]); Slurm's
  `scontrol show hostlist` keeps order and duplicates and brackets only the last number
  (n3,n1,n2 -> n[3,1-2]; r1n1,r1n2,r2n1,r2n2 -> r1n[1-2],r2n[1-2]). compress() below does what Slurm does.
Where Slurm accepts garbage we refuse it: n[1-] (Slurm: n1), n[+1-2] and n[ 1-2] (Slurm: n01 n02),
n[1-3 (Slurm: "n]"), n1-3] (Slurm: a host named "n1-3]").

Limits: Slurm refuses a range of more than 65536 hosts (MAX_RANGE), so do we; compress() splits longer
runs (n[1-65536,65537-70000]) where `scontrol show hostlist` writes n[1-70000], which Slurm cannot read
back. An expression may expand to at most MAX_HOSTS hosts; it is counted before anything is expanded.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from cordee.errors import InputError

MAX_RANGE = 65536  # Slurm's limit on one range, e.g. n[1-65536] (scontrol: "Too many hosts in range")
MAX_HOSTS = 1_000_000  # ours: an expression that expands further is almost surely a mistake
ALLOWED = "letters, digits, '-', '.' and '_'"
_NAME = re.compile(r"[A-Za-z0-9._-]*")
_NAMES = re.compile(r"[A-Za-z0-9._-]{1,255}(?:\n[A-Za-z0-9._-]{1,255})*")  # host names, one a line
_BRACKET = re.compile(r"[\[\]]")
_ITEM = re.compile(r"(?:[^\s,\[\]]|\[[^\[\]]*\])+")  # one comma/whitespace-separated item
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?", re.ASCII)
_DIGITS = "0123456789"


def expand(expr: str) -> list[str]:
    """Host names of a Slurm hostlist expression, in Slurm's order, duplicates kept."""

    def bad(reason: str) -> InputError:
        shown = repr(expr) if len(expr) <= 200 else f"{expr[:160]!r}... ({len(expr)} characters)"
        return InputError(f"bad hostlist {shown}: {reason}")

    depth = opened = 0
    for m in _BRACKET.finditer(expr):
        depth += 1 if m.group() == "[" else -1
        opened = m.start() if m.group() == "[" else opened
        if depth > 1:
            raise bad(f"nested '[' at character {m.start() + 1}")
        if depth < 0:
            raise bad(f"']' without '[' at character {m.start() + 1}")
    if depth:
        raise bad(f"'[' at character {opened + 1} is never closed")
    items = _ITEM.findall(expr)
    plans, total = [], 0
    for item in items:
        parts = _GROUP.split(item)  # literal, group, literal, group, ..., literal
        literals, groups = parts[0::2], parts[1::2]
        if groups and literals[-1]:
            raise bad(f"text {literals[-1]!r} after the last ']' in {item!r} (Slurm refuses a suffix)")
        for lit in literals:
            if not _NAME.fullmatch(lit):
                ch = next(c for c in lit if not _NAME.fullmatch(c))
                raise bad(f"{ch!r} is not allowed in a host name ({ALLOWED})")
        ranges = [_parse_ranges(g, bad) for g in groups]
        count = 1
        for rs in ranges:
            count *= sum(hi - lo + 1 for _, lo, hi in rs)
        total += count
        if total > MAX_HOSTS:
            raise bad(f"expands to more than {MAX_HOSTS} hosts")
        plans.append((item, literals, ranges))
    if not plans:
        raise bad("no host names in it") if expr.strip() else InputError("empty hostlist")
    hosts: list[str] = []
    for item, literals, ranges in plans:
        if not ranges:
            hosts.append(item)
            continue
        # each group's values, already prefixed with the literal before it; the low end's width
        # is the zero padding (Slurm: n[01-3] -> n01 n02 n03, n[1-03] -> n1 n2 n3)
        values = []
        for lit, rs in zip(literals, ranges, strict=False):
            group: list[str] = []
            for text, lo, hi in rs:
                width = len(text.partition("-")[0])
                group.extend(f"{lit}{i:0{width}d}" for i in range(lo, hi + 1))
            values.append(group)
        if len(values) == 1:
            hosts.extend(values[0])
            continue
        # Slurm's order: last group fastest, then the first, the second, ... (see module docstring)
        order = [*range(len(values) - 2, -1, -1), len(values) - 1]
        back = [order.index(i) for i in range(len(values))]
        for combo in itertools.product(*(values[i] for i in order)):
            hosts.append("".join(combo[j] for j in back))
    return hosts


def _parse_ranges(group: str, bad) -> list[tuple[str, int, int]]:
    """'1-3,07' -> [('1-3', 1, 3), ('07', 7, 7)]; checks syntax, direction and Slurm's range size."""
    out = []
    for text in group.split(","):
        m = _RANGE.fullmatch(text)
        if not m:
            raise bad(f"bad range {text!r} in [{group}]: expected N or N-M, ranges separated by commas")
        if max(len(x or "") for x in m.groups()) > 18:
            raise bad(f"number too long in range {text} (Slurm's numbers are 64-bit)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise bad(f"range {text} goes backwards")
        if hi - lo >= MAX_RANGE:
            raise bad(f"range {text} has {hi - lo + 1} hosts; Slurm allows at most {MAX_RANGE} in one range")
        out.append((text, lo, hi))
    return out


def compress(hosts: Iterable[str]) -> str:
    """The expression `scontrol show hostlist` writes for these hosts: same order, duplicates kept.

    Consecutive hosts that differ only in their trailing number become one range when the number
    keeps its zero padding (n09,n10 -> n[09-10]; n9,n010 -> n[9,010]); neighbouring runs with the same
    prefix share one bracket. Like Slurm it does not sort: sort the hosts first for a canonical form.
    compress([]) is "".
    """
    names = list(hosts)
    joined = "\n".join(names)  # checked in one pass in C; the count catches a name with a newline
    if names and not (_NAMES.fullmatch(joined) and joined.count("\n") == len(names) - 1):
        host = next(h for h in names if not _NAMES.fullmatch(h) or "\n" in h)
        raise InputError(f"bad host name {host[:80]!r}: use 1 to 255 of {ALLOWED}")
    runs: list[tuple] = []  # (prefix, lo, hi, width); lo is None for a name without trailing digits
    pfx, lo, hi, width = None, 0, 0, 0  # the run being extended
    for host in names:
        prefix = host.rstrip(_DIGITS)
        if len(host) - len(prefix) not in range(1, 19):  # no number, or one too long for Slurm
            if pfx is not None:
                runs.append((pfx, lo, hi, width))
            runs.append((host, None, None, 0))
            pfx = None
            continue
        digits = host[len(prefix) :]
        n = int(digits)
        # n extends the run if it is the next number and printing it at the run's width gives it back
        if (
            prefix == pfx
            and n == hi + 1
            and n - lo < MAX_RANGE
            and (len(digits) == width or f"{n:0{width}d}" == digits)
        ):
            hi = n
            continue
        if pfx is not None:
            runs.append((pfx, lo, hi, width))
        pfx, lo, hi, width = prefix, n, n, len(digits)
    if pfx is not None:
        runs.append((pfx, lo, hi, width))
    out = []
    for (prefix, numeric), grp in itertools.groupby(runs, key=lambda r: (r[0], r[1] is not None)):
        grp = list(grp)
        if not numeric:
            out.extend(r[0] for r in grp)
            continue
        spans = [f"{lo:0{w}d}" if lo == hi else f"{lo:0{w}d}-{hi:0{w}d}" for _, lo, hi, w in grp]
        single = len(grp) == 1 and grp[0][1] == grp[0][2]
        out.append(prefix + spans[0] if single else f"{prefix}[{','.join(spans)}]")
    return ",".join(out)
