"""Lustre layouts: run `lfs getstripe -d DIR` (bounded by a timeout), parse what it prints, and
compare a directory's default layout with the progressive file layout (PFL) CSCS recommends for
data and image directories (cscs-docs guides/storage.md):

    lfs setstripe -E 4M -c 1 -E 64M -c 4 -E -1 -c -1 -S 4M DIR

i.e. one stripe for the first 4 MiB of a file, four stripes up to 64 MiB, every OST beyond, with
4 MiB stripes in that last component.

Output formats parsed (Lustre Operations Manual, "Managing File Layout (Striping) and Free Space"
and "Data on MDT (DoM)" chapters; lfs-getstripe(1)):
- a plain layout: `lmm_stripe_count:  1` ... one key per line (files), or the directory template
  line `stripe_count:  1 stripe_size:   1048576 pattern:       raid0 stripe_offset: -1`;
- a composite (PFL) layout: `lcm_layout_gen`, `lcm_mirror_count`, `lcm_entry_count`, then per
  component `lcme_id` (N/A in a directory template), `lcme_flags`, `lcme_extent.e_start`,
  `lcme_extent.e_end` (a number or EOF) and the component's stripe keys in either form above;
- the YAML form (`--yaml`), which has the same keys, components listed under `components:`.
Object lists (`lmm_objects`, the obdidx table) and the printed path are ignored.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from cordee.errors import CordeeError, one_line, shown

MIB = 1 << 20
EOF = None  # a component that extends to the end of the file
LFS_TIMEOUT_S = 20.0  # a hung MDS makes lfs wait: never longer than this
RECOMMENDED_ARGS = "-E 4M -c 1 -E 64M -c 4 -E -1 -c -1 -S 4M"


@dataclass(frozen=True)
class Component:
    start: int  # bytes
    end: int | None  # bytes, exclusive; None = EOF
    stripe_count: int | None  # -1 = every OST; None = not printed
    stripe_size: int | None  # bytes
    pattern: str = ""

    def describe(self) -> str:
        count = "all" if self.stripe_count == -1 else self.stripe_count
        size = f" S {_size(self.stripe_size)}" if self.stripe_size else ""
        return f"[{_size(self.start)}, {'EOF' if self.end is None else _size(self.end)}) c {count}{size}"


@dataclass(frozen=True)
class Layout:
    composite: bool
    components: tuple[Component, ...]

    def describe(self) -> str:
        kind = f"PFL, {len(self.components)} components" if self.composite else "plain layout"
        return f"{kind}: " + "; ".join(c.describe() for c in self.components)


# (start, end, stripe count, last component's stripe size): sizes of the first components are not
# set by the recommended command (they inherit the filesystem default), so they are not compared.
RECOMMENDED = (Component(0, 4 * MIB, 1, None), Component(4 * MIB, 64 * MIB, 4, None),
               Component(64 * MIB, EOF, -1, 4 * MIB))  # fmt: skip

_KEYS = (
    "lcm_layout_gen lcm_mirror_count lcm_entry_count lcm_flags lcme_id lcme_mirror_id lcme_flags "
    "lcme_extent.e_start lcme_extent.e_end lmm_stripe_count lmm_stripe_size lmm_pattern "
    "lmm_stripe_offset stripe_count stripe_size pattern stripe_offset"
).split()
_PAIR = re.compile(r"(?:^|(?<=[\s{-]))(" + "|".join(re.escape(k) for k in _KEYS) + r"):[ \t]*(\S*)")


class LayoutParseError(CordeeError):
    """`lfs getstripe` printed something this parser does not understand."""


class LfsTimeout(CordeeError):
    """`lfs` did not answer in time (an unreachable metadata server): unknown, exit 3."""

    exit_code = 3


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, factor in (("G", 1 << 30), ("M", MIB), ("K", 1 << 10)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def _int(key: str, text: str) -> int | None:
    if text in ("", "N/A"):
        return None
    if re.fullmatch(r"-?[0-9]{1,20}", text) is None:
        raise LayoutParseError(f"lfs getstripe: {key} {shown(text)} is not a number")
    return int(text)


def parse_getstripe(text: str) -> Layout | None:
    """The layout that `lfs getstripe [-d] [--yaml]` printed; None when it printed no layout (a
    directory without a default layout of its own). LayoutParseError on malformed values."""
    text = text.replace("\\\n", " ")  # the manual wraps long template lines with a backslash
    pairs = [m.groups() for line in text.splitlines() for m in _PAIR.finditer(line)]
    if not pairs:
        return None
    composite = any(k.startswith("lcm_") for k, _ in pairs)
    components: list[dict] = []
    current: dict | None = None if composite else {}
    for key, value in pairs:
        if key == "lcme_id" or (composite and key == "lcme_extent.e_start" and current is None):
            current = {}
            components.append(current)
        if key.startswith("lcm_") or current is None:
            continue
        name = key.removeprefix("lmm_").removeprefix("lcme_extent.")
        current[name] = value
    if not composite:
        components = [current] if current else []
    out = []
    for c in components:
        end_text = c.get("e_end", "EOF")
        out.append(Component(
            start=_int("lcme_extent.e_start", c.get("e_start", "0")) or 0,
            end=None if end_text in ("EOF", "-1", "") else _int("lcme_extent.e_end", end_text),
            stripe_count=_int("stripe_count", c.get("stripe_count", "")),
            stripe_size=_int("stripe_size", c.get("stripe_size", "")),
            pattern=c.get("pattern", ""),
        ))  # fmt: skip
    if not out:
        return None
    return Layout(composite, tuple(out))


def compare(layout: Layout | None) -> list[str]:
    """How `layout` differs from the recommended PFL, one phrase per difference ([] = matches)."""
    if layout is None:
        return ["no default layout of its own (new files get the filesystem default)"]
    if not layout.composite or len(layout.components) != len(RECOMMENDED):
        return [f"{layout.describe()}; recommended: 3 components"]
    diffs = []
    for i, (have, want) in enumerate(zip(layout.components, RECOMMENDED, strict=True), 1):
        if (have.start, have.end) != (want.start, want.end):
            diffs.append(f"component {i} covers {have.describe()}, recommended {want.describe()}")
        elif have.stripe_count != want.stripe_count:
            diffs.append(f"component {i} {have.describe()}: stripe count should be {want.describe()}")
        elif want.stripe_size is not None and have.stripe_size != want.stripe_size:
            diffs.append(f"component {i} {have.describe()}: stripe size should be {_size(want.stripe_size)}")
    return diffs


def fix_command(directory: str) -> str:
    import shlex

    return f"lfs setstripe {RECOMMENDED_ARGS} {shlex.quote(directory)}"


def find_lfs(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return shutil.which("lfs", path=env.get("PATH", os.defpath))


def getstripe(directory: str, *, lfs: str, timeout_s: float = LFS_TIMEOUT_S) -> Layout | None:
    """`lfs getstripe -d DIRECTORY`, parsed. CordeeError (exit 3 for a timeout) naming the command
    when it fails, hangs, or prints what cannot be parsed."""
    from cordee import process

    argv = [lfs, "getstripe", "-d", directory]
    try:
        result = process.run(argv, timeout=timeout_s, grace=2.0, drain=1.0, keep=1 << 20)
    except OSError as e:
        raise CordeeError(f"{lfs} getstripe -d {directory}: cannot run: {e.strerror or e}") from None
    if result.timed_out:
        raise LfsTimeout(f"lfs getstripe -d {directory}: no answer within {timeout_s:g} s")
    if result.returncode != 0:
        tail = one_line(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")[:200]
        how = f"signal {result.signal}" if result.signal else f"exit {result.returncode}"
        raise CordeeError(f"lfs getstripe -d {directory}: {how}{': ' + tail if tail else ''}")
    return parse_getstripe(result.stdout)
