"""C printf formatting in Python, for the variadic logger of NCCL net plugins.

The plugin's logger arguments arrive as raw integer-class and double register/stack slots
(abi.py explains how); this renders the format string with them the way glibc would, or
gives back the raw format string where it cannot be sure (%n, long double, wide characters, too
few slots). `%s` dereferences a pointer the plugin passed: only ever call this in the probe's
child process.
"""

from __future__ import annotations

import ctypes
import re

_CONVERSION = re.compile(
    r"%(?P<flags>[-+ #0']*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?"
    r"(?P<len>hh|h|ll|l|L|q|j|z|Z|t)?(?P<conv>.)",
    re.S,
)


class _GiveUp(Exception):
    pass


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def format_printf(fmt: str, ints: list[int], doubles: list[float]) -> str:
    """C printf of `fmt` with integer-class and double arguments taken in order (see module doc)."""
    ints, doubles = list(ints), list(doubles)

    def take(pool: list):
        if not pool:
            raise _GiveUp
        return pool.pop(0)

    def one(m: re.Match) -> str:
        flags, width, prec, length, conv = m.group("flags", "width", "prec", "len", "conv")
        if conv == "%":
            return "%"
        if conv in "nm" or length == "L" or (conv in "cs" and length) or (conv == "o" and "#" in flags):
            raise _GiveUp  # rare, or Python's % would differ from C (wide chars, "%#o")
        flags = flags.replace("'", "")
        if width == "*":
            width = str(_signed(take(ints), 32))
            if width.startswith("-"):
                flags, width = flags + "-", width[1:]
        if prec == "*":
            p = _signed(take(ints), 32)
            prec = str(p) if p >= 0 else None
        spec = "%" + flags + (width or "") + ("" if prec is None else "." + (prec or "0"))
        bits = {"hh": 8, "h": 16, None: 32}.get(length, 64)
        if conv in "di":
            return (spec + "d") % _signed(take(ints), bits)
        if conv in "ouxX":
            return (spec + ("d" if conv == "u" else conv)) % (take(ints) & ((1 << bits) - 1))
        if conv == "c":
            return (spec + "c") % chr(take(ints) & 0xFF)
        if conv in "eEfFgG":
            return (spec + conv) % take(doubles)
        if conv in "aA":
            return take(doubles).hex()
        if conv == "p":
            ptr = take(ints)
            return ("%" + flags + (width or "") + "s") % (hex(ptr) if ptr else "(nil)")
        if conv == "s":
            ptr = take(ints)
            text = ctypes.string_at(ptr).decode(errors="replace") if ptr else "(null)"
            return (spec + "s") % text
        raise _GiveUp

    try:
        return _CONVERSION.sub(one, fmt)
    except (_GiveUp, ValueError, TypeError, OverflowError):
        return fmt
