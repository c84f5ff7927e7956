"""Hostile values as hypothesis strategies: numbers, text, paths, hostlists, launch environments,
Slurm time limits, byte sizes and matrix orders.

Everything here can be passed on a command line or in the environment: no NUL character and no
lone surrogate (Popen cannot pass them), which is all that is left out.
"""

from __future__ import annotations

from hypothesis import strategies as st

# str.isdigit() says yes, int() says no (superscripts, circled digits): the Unicode-digit class.
NOT_INT_DIGITS = "¹²³⁰⁴⁵⁶⁷⁸⁹①⑩"
OTHER_DECIMALS = "٠٣۵१০๓０"  # int() accepts these
NUMBER_WORDS = [
    "", " ", "0", "-0", "+1", " 7 ", "-1", "1e10", "1e309", "1E3", "inf", "-inf", "nan", "0x10", "0o7",
    "1_000", "1.5", "1,2", "00000000000000000000001", "18446744073709551616", "9223372036854775808",
    "16k", "1(x2)", "²", "1²", "①",
]  # fmt: skip
NASTY_TEXT = [
    "\n", "a\nb", "\r", "\x1b[31mred", "\x07", "\t", "\x7f", "\x85", "\u2028", "\u202e", "\ufeff", "$(id)",
    "`id`", "${HOME}", "$HOME", "${", "$", "$$", "${X:-", "${UNDEFINED_VAR}", "'", '"', "\\", "%s", "{}",
    "..", "../../..", "/", "-", "--", "-h", "--help", "~", "*", "é", "😀", "a" * 300, " ",
]  # fmt: skip
# Places a path may name, from the sandbox's hostile files to the kernel's odd ones.
PATHS = [
    "{CWD}/fifo", "{CWD}/fifo.yaml", "{CWD}/fifo.toml", "{CWD}/zero.yaml", "{CWD}/zero.toml", "/dev/zero",
    "/dev/null", "/dev/full", "/proc/self/mem", "{CWD}/mem.toml", "{CWD}/dir.yaml", "{CWD}/dir.toml",
    "{CWD}/loop.toml", "{CWD}/dangling.yaml", "{CWD}/binary.yaml", "{CWD}/binary.toml", "{CWD}/empty.yaml",
    "{CWD}/empty.toml", "{CWD}/big.yaml", "{CWD}/no-such-file", "no/such/dir/x", "{CWD}/" + "n" * 300,
    "{CWD}/" + "d/" * 2100 + "x", "{CWD}/outside/victim.txt", "{CWD}/outside", "/", "", ".", "..",
    "/proc", "/proc/1/environ", "{CWD}/a\nb", "{CWD}/\x1b[2J",
]  # fmt: skip


def _clean(text: str) -> str:
    return text.replace("\0", "")


def huge_numbers() -> st.SearchStrategy[str]:
    """More digits than Python converts (4300), or a few hundred."""
    return st.one_of(
        st.integers(4301, 9000).map(lambda n: "9" * n),
        st.integers(19, 400).map(lambda n: "1" * n),
        st.integers(4301, 6000).map(lambda n: "1" + "0" * n),
    )


def unicode_numbers() -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(NOT_INT_DIGITS + OTHER_DECIMALS + "0123456789"), min_size=1, max_size=4)


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        st.integers(-3, 70).map(str),
        st.sampled_from(NUMBER_WORDS),
        huge_numbers(),
        unicode_numbers(),
    )


def text() -> st.SearchStrategy[str]:
    anything = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=30)
    pieces = st.lists(st.sampled_from(NASTY_TEXT) | anything, min_size=1, max_size=3).map("".join)
    return st.one_of(st.sampled_from(NASTY_TEXT), anything, pieces).map(_clean)


def paths() -> st.SearchStrategy[str]:
    return st.sampled_from(PATHS)


def values() -> st.SearchStrategy[str]:
    """Anything a variable or an option may be given."""
    return st.one_of(numbers(), text(), paths())


def timeouts() -> st.SearchStrategy[str]:
    """Seconds, well and badly formed; huge and non-finite ones included (1e10, inf, nan)."""
    good = st.floats(0.01, 3, allow_nan=False).map(lambda f: f"{f:.3g}")
    return st.one_of(
        good, st.sampled_from(["0", "-1", "1e10", "1e309", "inf", "nan", "-inf", "1e-320"]), numbers()
    )


def repeat_counts() -> st.SearchStrategy[str]:
    """SLURM_TASKS_PER_NODE in Slurm's compact form, repeat counts up to absurd."""
    part = st.builds(
        lambda n, r: f"{n}(x{r})" if r is not None else str(n),
        st.integers(0, 9) | st.just(10**30),
        st.none() | st.integers(0, 4) | st.sampled_from([10**6, 10**9, 2**63, 10**40]),
    )
    return st.lists(part, min_size=1, max_size=3).map(",".join) | numbers() | text()


def hostlists() -> st.SearchStrategy[str]:
    """Slurm hostlist expressions, from well formed to nested, unbalanced and enormous."""
    number = st.integers(0, 70).map(str) | st.sampled_from(["007", "65536", "65537"]) | numbers()
    rng = st.builds(lambda a, b: f"{a}-{b}" if b else a, number, st.none() | number)
    group = st.lists(rng, min_size=1, max_size=3).map(lambda rs: "[" + ",".join(rs) + "]")
    prefix = st.sampled_from(["nid", "n", "r1n", "a.b-c_", "", "x" * 300, "n[", "]", "n[[1]]", "é"])
    host = st.builds(lambda p, gs, s: p + "".join(gs) + s, prefix, st.lists(group, max_size=3),
                     st.sampled_from(["", "", "x", "[", "]"]))  # fmt: skip
    sep = st.sampled_from([",", ",", " ", "\n", "\t", ",,"])
    items = st.lists(host, min_size=1, max_size=4)
    joined = st.builds(lambda hs, s: s.join(hs), items, sep)
    big = st.sampled_from(
        ["n[1-65536]", "a[1-1000]b[1-1000]", "a[1-1000]b[1-1001]", "n[0-18446744073709551615]"]
    )
    return st.one_of(joined, big, text()).map(_clean)


def durations() -> st.SearchStrategy[str]:
    """Slurm time limits ([D-]HH:MM:SS and its shorter forms; 0 means none), well and badly formed."""
    words = ["01:00:00", "00:10:00", "10", "1-00:00:00", "0", "00:00", "00:00:59", "00:01:00", "999-99:59:59",
             "1:2:3", "00:60:00", "-1", "UNLIMITED", "infinite"]  # fmt: skip
    return st.sampled_from(words) | numbers() | text()


# Byte sizes with K/M/G/T suffixes as `cordee bench` reads them; no valid one is large enough to
# take a fuzz run past its deadline.
SIZE_WORDS = ["1", "3", "1K", "64K", "1k", "1KB", "1KiB", "0", "-1", "1e3", "64G", "65G", "1T", "1 K", "²",
              ",", "1,1", "1,,2", "0x10", "", "9" * 30, ",".join(["1"] * 65)]  # fmt: skip


def byte_sizes() -> st.SearchStrategy[str]:
    return st.sampled_from(SIZE_WORDS) | text()


def matrix_orders() -> st.SearchStrategy[str]:
    """GEMM orders n (n x n matrices): small ones, and ones no run may take."""
    return st.sampled_from(["1", "16", "64", "16,1", "0", "65537", "¹", "1.5", "9" * 30, ","]) | text()
