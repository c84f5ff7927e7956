"""System profiles: what a healthy node of one kind of machine measures, as data.

A profile is a TOML file in preflight/systems/ (its format, key by key: systems/README.md): the
node's shape (backend, GPUs, NICs, NVLink), the message sizes of the collective sweep, and one
threshold per metric, each with the source of its number. Per-GPU-count variants live in the same
file as `[gpus.N]` tables, chosen by load_system(name, gpus=N). baseline() turns the JSON of
earlier runs into a profile of the same format.

Only the standard library here: the quick level and `cordee preflight --help` import this module.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from cordee.errors import InputError, shown
from cordee.fileio import read_toml

SYSTEMS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "systems")
RESULTS_SCHEMA = "cordee.preflight/1"
RESULTS_MAX_BYTES = 256 << 20  # a 2,688-node report with sweep rows runs to tens of MB
FILE_KEY = "_file"  # load_results() notes each document's path here; baseline() names its sources
KINDS = ("min", "max")
BACKENDS = ("nccl", "gloo")
OPS = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv")  # cordee.bench.collectives

_BUSBW = {f"{op}_busbw_{scope}_gbps" for op in OPS for scope in ("intra", "inter")}
# Performance measurements: baseline() replaces their thresholds with the median of a run.
MEASURED = frozenset(
    {"gemm_bf16_tflops", "hbm_copy_gbps", "cpu_gemm_gflops", "mem_copy_gbps", "pair_busbw_gbps"}
)
MEASURED |= _BUSBW
# Every metric a profile may set, with the direction it is judged in (min: higher is better).
METRICS: dict[str, str] = {
    **dict.fromkeys(MEASURED, "min"),
    **dict.fromkeys(("gpu_count", "pcie_width_ratio", "pcie_gen_ratio", "pair_relative"), "min"),
    **dict.fromkeys(("nic_count", "nic_speed_gbps"), "min"),
    **dict.fromkeys(("ecc_uncorrected", "retired_pages_pending", "remapped_rows_pending"), "max"),
    **dict.fromkeys(("gpu_temp_idle_c", "gpu_mem_used_idle_frac", "foreign_processes"), "max"),
    **dict.fromkeys(("nvlink_links_down", "straggler_ratio"), "max"),
}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_GPUS = 64  # GPUs per node a profile may describe
_INTS = {"gpus_per_node": (1, MAX_GPUS), "nics_per_node": (0, 64), "nvlink_links": (0, 64)}
_INTS |= {"large_message_bytes": (1, 1 << 40)}
_TYPES = {"description": str, "backend": str, "libfabric_provider": str, "net_plugin": bool, "nvls": bool}
_TYPES |= dict.fromkeys(_INTS, int) | {"sweep": list, "thresholds": dict, "gpus": dict}
_REQUIRED = ("description", "backend", "large_message_bytes", "sweep")
_VARIANT_KEYS = ("nics_per_node", "nvls", "nvlink_links", "large_message_bytes", "sweep", "thresholds")
_THRESHOLD_KEYS = ("kind", "fail", "warn", "unit", "source")
MAX_SWEEP = 64
# GPU model substring -> profile (None: a model cordee has no profile for), longest match first.
_SUGGEST = {"GH200": "alps-gh200", "H200 NVL": None, "H100 NVL": None, "H100 PCIe": None}
_SUGGEST |= {"H200": "h200-sxm", "H100": "h100-sxm"}


@dataclass(frozen=True)
class Threshold:
    metric: str  # e.g. "gemm_bf16_tflops"
    kind: str  # "min" (value must be >= limit) or "max" (value must be <= limit)
    fail: float  # beyond this: status fail
    warn: float | None  # beyond this (but not fail): status warn
    unit: str
    source: str

    def judge(self, value: float) -> str:
        """ "ok", "warn" or "fail"; a value equal to a limit is within it; NaN fails (no measurement)."""
        if math.isnan(value):
            return "fail"
        beyond = (lambda limit: value < limit) if self.kind == "min" else (lambda limit: value > limit)
        if beyond(self.fail):
            return "fail"
        return "warn" if self.warn is not None and beyond(self.warn) else "ok"


@dataclass(frozen=True)
class SystemProfile:
    name: str
    description: str
    backend: str  # "nccl" | "gloo"
    gpus_per_node: int | None  # None: no GPUs (cpu-ci)
    nics_per_node: int | None
    libfabric_provider: str | None  # e.g. "cxi"
    net_plugin: bool  # the NCCL net plugin must be loaded
    nvls: bool
    nvlink_links: int | None  # expected NVLink links up per GPU (None: don't check)
    large_message_bytes: int  # thresholds on collectives apply only to sizes >= this
    sweep: tuple[int, ...]  # message sizes (bytes) of the standard sweep
    thresholds: dict[str, Threshold]
    source_file: str

    def threshold(self, metric: str) -> Threshold | None:
        return self.thresholds.get(metric)


def list_systems() -> list[str]:
    """Names of the shipped profiles (file stems), sorted."""
    try:
        files = os.listdir(SYSTEMS_DIR)
    except OSError:
        return []
    return sorted(f[:-5] for f in files if f.endswith(".toml") and _NAME_RE.match(f[:-5]))


def load_system(name: str, gpus: int | None = None) -> SystemProfile:
    """The shipped profile `name`, with its `[gpus.N]` variant when gpus=N (gpus=None: the
    profile's own gpus_per_node). A GPU count without a variant gets the per-GPU thresholds only.
    InputError for an unknown name (listing the known ones) or bad content."""
    known = list_systems()
    if not isinstance(name, str) or name not in known:
        raise InputError(f"unknown system {shown(name)} (known: {', '.join(known)})")
    return load_system_file(os.path.join(SYSTEMS_DIR, f"{name}.toml"), gpus=gpus)


def load_system_file(path: str | os.PathLike, gpus: int | None = None) -> SystemProfile:
    """A profile from any file (named after its stem). InputError naming the file and the field on
    anything malformed: every variant is checked, not only the one chosen."""
    path = os.fspath(path)
    if gpus is not None and (
        isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_GPUS
    ):
        raise InputError(f"GPUs per node must be a whole number from 0 to {MAX_GPUS}, got {shown(gpus)}")
    raw = _read_toml(path)
    base = _settings(path, raw, "", tuple(_TYPES))
    variants = {}
    for key, table in base.pop("gpus", {}).items():
        count = (
            int(key)
            if key.isascii() and key.isdigit() and len(key) <= 3 and 1 <= int(key) <= MAX_GPUS
            else None
        )
        if count is None or not isinstance(table, dict):
            raise InputError(
                f"{path}: field 'gpus.{key}' must be a table named by a GPU count from 1 to {MAX_GPUS}"
            )
        variants[count] = _settings(path, table, f"gpus.{key}.", _VARIANT_KEYS)
    if variants and base.get("gpus_per_node") is None:
        raise InputError(f"{path}: [gpus.N] variants need 'gpus_per_node' (the default count)")
    for count in sorted(variants):  # every variant must make a valid profile
        _profile(path, base, variants, count)
    return _profile(path, base, variants, gpus)


def suggest_system(gpu_name: str | None, gpu_count: int) -> str:
    """The profile for a node whose GPUs are `gpu_name` (as NVML or torch name them, e.g. "NVIDIA
    H200"): "cpu-ci" without GPUs. InputError for a GPU model no profile describes."""
    if not gpu_name or gpu_count <= 0:
        return "cpu-ci"
    for model in sorted(_SUGGEST, key=len, reverse=True):
        if model.lower() in gpu_name.lower():
            if _SUGGEST[model] is not None:
                return _SUGGEST[model]
            break
    raise InputError(
        f"no system profile describes GPU {shown(gpu_name)} (known systems: {', '.join(list_systems())}); "
        "choose one with --system or write a profile file (preflight baseline makes one)"
    )


# --- reading and checking ---------------------------------------------------------------------


def _read_toml(path: str) -> dict:
    return read_toml(path, "system profile")


def _settings(path: str, raw: dict, where: str, allowed: tuple[str, ...]) -> dict:
    """The keys of the top level (where="") or of a [gpus.N] table, each checked for its type and
    range; unknown keys refused."""
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise InputError(f"{path}: unknown field {shown(where + unknown[0])}; allowed: {', '.join(allowed)}")
    out: dict = {}
    for key, value in raw.items():
        field, kind = f"{where}{key}", _TYPES[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"{path}: field {field!r} must be {_TYPE_NAMES[kind]}, got {shown(value)}")
        if kind is str and not value.strip():
            raise InputError(f"{path}: field {field!r} must not be empty")
        if key in _INTS and not _INTS[key][0] <= value <= _INTS[key][1]:
            raise InputError(
                f"{path}: field {field!r} must be from {_INTS[key][0]} to {_INTS[key][1]}, got {value}"
            )
        out[key] = value
    if "backend" in out and out["backend"] not in BACKENDS:
        raise InputError(
            f"{path}: field 'backend' is {shown(out['backend'])}; allowed: {', '.join(BACKENDS)}"
        )
    if "sweep" in out:
        out["sweep"] = _sweep(path, f"{where}sweep", out["sweep"])
    if "thresholds" in out:
        out["thresholds"] = {
            m: _threshold(path, f"{where}thresholds.{m}", m, t) for m, t in out["thresholds"].items()
        }
    return out


_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a whole number", list: "a list", dict: "a table"}


def _sweep(path: str, field: str, sizes: list) -> tuple[int, ...]:
    ok = 0 < len(sizes) <= MAX_SWEEP and all(type(s) is int and 1 <= s <= 1 << 40 for s in sizes)
    if not ok or any(a >= b for a, b in zip(sizes, sizes[1:], strict=False)):
        raise InputError(
            f"{path}: field {field!r} must be 1 to {MAX_SWEEP} message sizes in bytes (1 to 2^40), "
            f"increasing, got {shown(sizes)}"
        )
    return tuple(sizes)


def _threshold(path: str, field: str, metric: str, raw: object) -> Threshold:
    if metric not in METRICS:
        raise InputError(f"{path}: field {field!r}: unknown metric; known: {', '.join(sorted(METRICS))}")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: field {field!r} must be a table with keys {', '.join(_THRESHOLD_KEYS)}")
    unknown = sorted(set(raw) - set(_THRESHOLD_KEYS))
    missing = [k for k in _THRESHOLD_KEYS if k != "warn" and k not in raw]
    if unknown or missing:
        what = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise InputError(
            f"{path}: field {field!r}: {what}; keys: {', '.join(_THRESHOLD_KEYS)} (warn optional)"
        )
    kind = raw["kind"]
    if kind not in KINDS:
        raise InputError(f"{path}: field '{field}.kind' is {shown(kind)}; allowed: min, max")
    if kind != METRICS[metric]:
        better = "higher" if METRICS[metric] == "min" else "lower"
        raise InputError(
            f"{path}: field '{field}.kind' must be {METRICS[metric]!r}: {better} {metric} is better"
        )
    for key in ("unit", "source"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise InputError(
                f"{path}: field '{field}.{key}' must be a non-empty string, got {shown(raw[key])}"
            )
    fail, warn = _limit(path, f"{field}.fail", raw["fail"]), raw.get("warn")
    if warn is not None:
        warn = _limit(path, f"{field}.warn", warn)
        if (warn < fail) if kind == "min" else (warn > fail):
            side = ">=" if kind == "min" else "<="
            raise InputError(
                f"{path}: field '{field}.warn' ({warn:g}) must be {side} fail ({fail:g}) for a {kind} metric"
            )
    return Threshold(metric, kind, fail, warn, raw["unit"].strip(), raw["source"].strip())


def _limit(path: str, field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InputError(f"{path}: field {field!r} must be a finite number >= 0, got {shown(value)}")
    return float(value)


def _profile(path: str, base: dict, variants: dict[int, dict], gpus: int | None) -> SystemProfile:
    missing = [k for k in _REQUIRED if k not in base]
    if missing:
        raise InputError(f"{path}: field {missing[0]!r} is required")
    settings, name = dict(base), os.path.splitext(os.path.basename(path))[0]
    has_gpus = base.get("gpus_per_node") is not None
    if base["backend"] == "nccl" and not has_gpus:
        raise InputError(f"{path}: backend 'nccl' needs 'gpus_per_node'")
    if base["backend"] == "gloo" and has_gpus:
        raise InputError(f"{path}: backend 'gloo' runs on CPUs: remove 'gpus_per_node'")
    if has_gpus and gpus == 0:
        raise InputError(
            f"system {name!r} is for nodes with GPUs ({base['gpus_per_node']} per node); none found"
        )
    if has_gpus and gpus is not None and not variants and gpus != base["gpus_per_node"]:
        raise InputError(
            f"{path}: for nodes with {base['gpus_per_node']} GPUs, not {gpus} (no [gpus.{gpus}] variant)"
        )
    if has_gpus and gpus is not None:
        variant = variants.get(gpus)
        settings.update({k: v for k, v in (variant or {}).items() if k != "thresholds"})
        settings["thresholds"] = {**base.get("thresholds", {}), **(variant or {}).get("thresholds", {})}
        settings["gpus_per_node"] = gpus
        if variants and variant is None:
            known = ", ".join(str(c) for c in sorted(variants))
            settings["description"] += (
                f" [no variant for {gpus} GPUs (have {known}): per-GPU thresholds only]"
            )
    elif has_gpus and base["gpus_per_node"] in variants:
        return _profile(path, base, variants, base["gpus_per_node"])
    thresholds = settings.get("thresholds", {})
    if settings["sweep"][-1] < settings["large_message_bytes"]:
        raise InputError(
            f"{path}: field 'sweep' has no size >= large_message_bytes: no bandwidth could be judged"
        )
    if settings.get("gpus_per_node") == 1:
        intra = sorted(m for m in thresholds if m.endswith("_intra_gbps"))
        if intra:
            raise InputError(
                f"{path}: field 'thresholds.{intra[0]}': one GPU per node has no intra-node collective"
            )
    return SystemProfile(
        name=name,
        description=settings["description"].strip(),
        backend=settings["backend"],
        gpus_per_node=settings.get("gpus_per_node"),
        nics_per_node=settings.get("nics_per_node"),
        libfabric_provider=settings.get("libfabric_provider"),
        net_plugin=settings.get("net_plugin", False),
        nvls=settings.get("nvls", False),
        nvlink_links=settings.get("nvlink_links") or None,  # 0: not checked (e.g. a GPU in a VM)
        large_message_bytes=settings["large_message_bytes"],
        sweep=settings["sweep"],
        thresholds=thresholds,
        source_file=os.path.abspath(path),
    )


# --- small helpers ----------------------------------------------------------------------------


def _finite(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
