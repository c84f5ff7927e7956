"""What a well-formed value is for the variables cordee knows, and NCCL_PROTO parsing.

Pure functions, stdlib only. Two grades of "not well-formed":
- malformed: cannot be parsed at all (NCCL and libfabric then misread it silently,
  e.g. strtoll("16k") == 16) -> the check reports it as dangerous;
- unexpected: parses, but is outside the documented range or set of choices that
  cordee knows (cordee's list may lag a newer release) -> reported as different.
"""

from __future__ import annotations

from cordee.numbers import as_int

PROTOCOLS = ("LL", "LL128", "Simple")
_PROTO_BY_LOWER = {p.lower(): p for p in PROTOCOLS}

NCCL_DOCS = "NCCL docs env.html"
FI_DOCS = "libfabric man fi_cxi(7), fi_mr(3)"

# Integers: name -> (lowest, highest or None, source).
INTS: dict[str, tuple[int, int | None, str]] = {
    "FI_CXI_DEFAULT_CQ_SIZE": (1, None, FI_DOCS),
    "FI_CXI_DEFAULT_TX_SIZE": (1, None, FI_DOCS),
    "FI_CXI_RDZV_GET_MIN": (0, None, FI_DOCS),
    "FI_CXI_RDZV_THRESHOLD": (0, None, FI_DOCS),
    "FI_CXI_RDZV_EAGER_SIZE": (0, None, FI_DOCS),
    "FI_CXI_DISABLE_HOST_REGISTER": (0, 1, FI_DOCS),
    "FI_MR_CACHE_MAX_COUNT": (0, None, FI_DOCS),
    "FI_MR_CACHE_MAX_SIZE": (-1, None, FI_DOCS),
    "NCCL_CROSS_NIC": (0, 2, NCCL_DOCS),
    "NCCL_NET_GDR_READ": (0, 1, NCCL_DOCS),
    "NCCL_NET_GDR_C2C": (0, 1, NCCL_DOCS),
    "NCCL_PXN_DISABLE": (0, 1, NCCL_DOCS),
    "NCCL_IB_DISABLE": (0, 1, NCCL_DOCS),
    "NCCL_NCHANNELS_PER_NET_PEER": (1, None, NCCL_DOCS),
    "NCCL_MAX_NCHANNELS": (1, None, NCCL_DOCS),
    "NCCL_MIN_NCHANNELS": (1, None, NCCL_DOCS),
    "NCCL_SOCKET_NTHREADS": (1, 16, NCCL_DOCS),
    "NCCL_NSOCKS_PERTHREAD": (1, None, NCCL_DOCS),
    "NCCL_BUFFSIZE": (1, None, NCCL_DOCS),
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": (0, 3, "PyTorch ProcessGroupNCCL environment variables"),
    "MPICH_GPU_SUPPORT_ENABLED": (0, 1, "HPE Cray MPICH intro_mpi(3)"),
    "CUDA_CACHE_DISABLE": (0, 1, "CUDA programming guide: CUDA environment variables"),
}
# One of a set of words, not case sensitive: name -> (allowed, source).
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "FI_CXI_RX_MATCH_MODE": (("hardware", "software", "hybrid"), FI_DOCS),
    "FI_CXI_RDZV_PROTO": (("default", "alt_read"), FI_DOCS),
    "NCCL_DEBUG": (("version", "warn", "info", "abort", "trace"), NCCL_DOCS),
}
# NCCL path levels (LOC..SYS, or the legacy integers 0..5).
LEVEL_VARS = ("NCCL_P2P_LEVEL", "NCCL_NET_GDR_LEVEL")
_LEVELS = ("loc", "nvl", "pix", "pxb", "pxn", "phb", "sys")


def parse_nccl_proto(value: str) -> tuple[dict[str | None, frozenset[str]], list[str]]:
    """Parse NCCL_PROTO into {function or None (= all functions not listed): enabled protocols}.

    Grammar (NCCL docs, NCCL_PROTO / NCCL_ALGO): comma-separated protocols, not case
    sensitive, a leading ^ excludes instead of includes; since 2.24 a semicolon-separated
    list of [function:]list entries, the function optional for the first entry only.
    Returns the entries and the tokens that could not be parsed.
    """
    entries: dict[str | None, frozenset[str]] = {}
    bad: list[str] = []
    for i, raw in enumerate(value.split(";")):
        part = raw.strip()
        if not part:
            continue
        func = None
        if ":" in part:
            func, part = (s.strip() for s in part.split(":", 1))
            if not func:
                bad.append(raw.strip())
                continue
            func = func.lower()
        elif i > 0:
            bad.append(part)
            continue
        invert = part.startswith("^")
        named: set[str] = set()
        for token in (part[1:] if invert else part).split(","):
            token = token.strip()
            if not token:
                continue
            proto = _PROTO_BY_LOWER.get(token.lower())
            if proto is None:
                bad.append(token)
            else:
                named.add(proto)
        entries[func] = frozenset(set(PROTOCOLS) - named if invert else named)
    return entries, bad


def ll128_scopes(value: str | None) -> list[str]:
    """Where NCCL may use LL128 under this NCCL_PROTO value; [] means nowhere."""
    if value is None or not value.strip():
        return ["all functions (NCCL_PROTO unset: NCCL's default enables LL128 where supported)"]
    entries, _ = parse_nccl_proto(value)
    default = entries.get(None, frozenset(PROTOCOLS))
    funcs = sorted(f for f in entries if f is not None)
    scopes = []
    if "LL128" in default:
        scopes.append("all functions not listed" if funcs else "all functions")
    scopes += [f for f in funcs if "LL128" in entries[f]]
    return scopes


def check_value(name: str, value: str) -> tuple[str, str] | None:
    """(status, message) when `value` is not well-formed for `name`, else None.

    status is "dangerous" for values that cannot be parsed, "different" for values that
    parse but are outside what cordee knows to be valid. Unknown names are not checked.
    """
    text = value.strip()
    if name in INTS:
        lo, hi, _ = INTS[name]
        number = as_int(text)
        if number is None:
            return "dangerous", f"{value!r} is not an integer; the library would misread it"
        if number < lo or (hi is not None and number > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            return "different", f"{number} is outside the documented range {span}"
    elif name in CHOICES:
        allowed = CHOICES[name][0]
        if text.lower() not in allowed:
            return "different", f"{value!r} is not one of {', '.join(allowed)}"
    elif name in LEVEL_VARS:
        number = as_int(text)
        if text.lower() not in _LEVELS and not (number is not None and 0 <= number <= 5):
            return "different", f"{value!r} is not a path level ({', '.join(_LEVELS).upper()} or 0..5)"
    elif name == "NCCL_PROTO":
        _, bad = parse_nccl_proto(text)
        if bad:
            return "dangerous", (
                f"cannot parse {', '.join(repr(b) for b in bad)}; protocols are LL, LL128, Simple "
                "([function:][^]list, entries separated by ;)"
            )
    return None


def source_for(name: str) -> str:
    """Where the valid values of `name` are documented ("" if cordee does not check it)."""
    if name in INTS:
        return INTS[name][2]
    if name in CHOICES:
        return CHOICES[name][1]
    if name in LEVEL_VARS or name == "NCCL_PROTO":
        return NCCL_DOCS
    return ""
