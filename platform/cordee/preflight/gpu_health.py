"""GPU health of one node through NVML (nvidia-ml-py, the `nvml` extra; imported lazily, no torch).

read_nvml() collects plain readings (a dict: count, driver, cuda_visible_devices, and one flat dict
per GPU, see _read_gpu); judge() turns readings into Results against the system profile, so the
judging is tested without a GPU; gpu_checks() runs both, the NVML pass in a thread bounded by a
timeout (NVML can hang on a GPU that fell off the bus).

A field NVML does not support on a GPU (NVMLError_NotSupported) is None in the readings and a skip
in the Results, never an error. Facts from the NVML API reference (docs.nvidia.com/deploy/nvml-api):
clocks event reasons (nvmlClocksEventReasons), ECC counters (volatile: since the driver loaded;
aggregate: the GPU's lifetime), retired pages and row remapping "pending" (a GPU reset applies them),
PCIe link generation and width.

Foreign processes are compute processes on a GPU whose pid is not one of ours (`own_pids`: the
preflight ranks of this node). NVML reports pids as the host sees them, so this assumes a container
sharing the host's pid namespace, as Enroot / the Container Engine do.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace

from cordee.errors import one_line
from cordee.numbers import as_int
from cordee.preflight.env_checks import CheckTimeout, bounded_call
from cordee.preflight.results import DETAIL_MAX, Result, worst

THROTTLE_SAMPLE_GAP_S = 0.1  # event reasons are read twice: HW slowdown may flicker at a P-state change
GPU_IDLE = 0x1
# nvmlClocksEventReasons bits (nvml.h). Benign: nothing runs (GPU idle), an administrator's clock
# setting (applications or display clocks), a sync-boost group holding clocks together, and the SW
# power cap, which keeps clocks within the set power limit and costs nothing at idle (a lowered
# limit shows up as low GEMM throughput, which the compute check measures).
BENIGN_REASONS = {GPU_IDLE: "GPU idle", 0x2: "applications clocks", 0x4: "SW power cap", 0x10: "sync boost"}
BENIGN_REASONS[0x100] = "display clock setting"
# "reducing the core clocks by a factor of 2 or more": too hot, a power brake, or over-current
FAIL_REASONS = {0x8: "HW slowdown", 0x40: "HW thermal slowdown", 0x80: "HW power brake slowdown"}
WARN_REASONS = {0x20: "SW thermal slowdown", 0x200: "board limit", 0x400: "reliability"}

# Limits where the system profile sets none: each follows from what the metric means.
DEFAULT_LIMITS = {
    "ecc_uncorrected": ("max", 0.0, None, "NVML: uncorrectable ECC errors since the driver loaded"),
    "retired_pages_pending": ("max", 0.0, None, "NVML: pages wait for a GPU reset to be retired"),
    "remapped_rows_pending": ("max", 0.0, None, "NVML: rows wait for a GPU reset to be remapped"),
    "foreign_processes": ("max", 0.0, None, "another process holds memory and SMs of our GPU"),
    "pcie_width_ratio": ("min", 1.0, None, "a link trained below its width loses bandwidth at any load"),
    "pcie_gen_ratio": ("min", 0.0, 1.0, "a slot below the GPU's PCIe generation halves host bandwidth"),
    "nvlink_links_down": ("max", 0.0, None, "every NVLink of the system must be up"),
}


class NvmlUnavailable(Exception):
    """No NVML here: nvidia-ml-py not installed, or no NVIDIA driver (libnvidia-ml.so.1)."""


def _cut(text: str) -> str:
    text = one_line(text)
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


# --- reading ---------------------------------------------------------------------------------


def _nvml():
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install 'cordee[nvml]')") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise NvmlUnavailable(f"no NVIDIA driver ({e})") from None
    return pynvml


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _call(nvml, errors: dict, field: str, fn, *args):
    """fn(*args); NotSupported -> None; other NVML errors recorded under `field` (a lost GPU fails,
    a refused permission skips, anything else is an error) -> None."""
    try:
        return fn(*args)
    except nvml.NVMLError as e:
        code = getattr(e, "value", None)
        if code != nvml.NVML_ERROR_NOT_SUPPORTED:
            status = {nvml.NVML_ERROR_GPU_IS_LOST: "fail", nvml.NVML_ERROR_NO_PERMISSION: "skip"}
            errors[field] = {"status": status.get(code, "error"), "message": f"{fn.__name__}: {e}"}
        return None


def _event_reasons(nvml, handle, errors: dict) -> int | None:
    fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)  # older: ...ThrottleReasons
    return _call(nvml, errors, "throttle", fn or nvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle)


def _nvlink_up(nvml, handle) -> int | None:
    up = 0
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            up += nvml.nvmlDeviceGetNvLinkState(handle, link) == nvml.NVML_FEATURE_ENABLED
        except nvml.NVMLError as e:
            if link == 0 and getattr(e, "value", None) == nvml.NVML_ERROR_NOT_SUPPORTED:
                return None  # no NVLink on this GPU
            break  # past this GPU's last link (NVML_ERROR_INVALID_ARGUMENT)
    return up


def _read_gpu(nvml, index: int) -> dict:
    h, errors = nvml.nvmlDeviceGetHandleByIndex(index), {}

    def get(field, fn, *args):
        return _call(nvml, errors, field, fn, h, *args)

    mem = get("memory", nvml.nvmlDeviceGetMemoryInfo)
    remap = get("row_remap", nvml.nvmlDeviceGetRemappedRows)  # (corrected, uncorrected, pending, failure)
    pending = get("retired_pages", nvml.nvmlDeviceGetRetiredPagesPendingStatus)
    procs = get("processes", nvml.nvmlDeviceGetComputeRunningProcesses)
    pci = get("pci", nvml.nvmlDeviceGetPciInfo)
    unc = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    gpu_max_gen = getattr(nvml, "nvmlDeviceGetGpuMaxPcieLinkGeneration", None)
    return {
        "index": index,
        "name": _text(get("name", nvml.nvmlDeviceGetName) or ""),
        "uuid": _text(get("uuid", nvml.nvmlDeviceGetUUID) or ""),
        "pci_bus_id": _text(pci.busId) if pci is not None else "",
        "ecc_volatile": get("ecc", nvml.nvmlDeviceGetTotalEccErrors, unc, nvml.NVML_VOLATILE_ECC),
        "ecc_aggregate": get("ecc", nvml.nvmlDeviceGetTotalEccErrors, unc, nvml.NVML_AGGREGATE_ECC),
        "retired_pending": None if pending is None else pending == nvml.NVML_FEATURE_ENABLED,
        "remap_pending": None if remap is None else bool(remap[2]),
        "remap_failure": None if remap is None else bool(remap[3]),
        "throttle": _event_reasons(nvml, h, errors),
        "util": getattr(get("utilization", nvml.nvmlDeviceGetUtilizationRates), "gpu", None),
        "temp_c": get("temperature", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
        "mem_used": None if mem is None else int(mem.used),
        "mem_total": None if mem is None else int(mem.total),
        "procs": None if procs is None else [{"pid": int(p.pid), "used": p.usedGpuMemory} for p in procs],
        "pcie_gen": get("pcie", nvml.nvmlDeviceGetCurrPcieLinkGeneration),
        "pcie_gen_max": get("pcie", nvml.nvmlDeviceGetMaxPcieLinkGeneration),  # the GPU in this slot
        "pcie_gen_gpu_max": get("pcie", gpu_max_gen) if gpu_max_gen else None,  # the GPU alone
        "pcie_width": get("pcie", nvml.nvmlDeviceGetCurrPcieLinkWidth),
        "pcie_width_max": get("pcie", nvml.nvmlDeviceGetMaxPcieLinkWidth),
        "nvlink_up": _nvlink_up(nvml, h),
        "errors": errors,
    }


def read_nvml(environ: Mapping[str, str]) -> dict:
    """Readings of every GPU NVML sees (NVML ignores CUDA_VISIBLE_DEVICES; its value is recorded).
    NvmlUnavailable without NVML. The clocks event reasons are read twice, THROTTLE_SAMPLE_GAP_S
    apart, and only reasons present both times count."""
    nvml = _nvml()
    try:
        count = nvml.nvmlDeviceGetCount()
        gpus = []
        for index in range(count):
            try:
                gpus.append(_read_gpu(nvml, index))
            except nvml.NVMLError as e:  # no handle: the GPU fell off the bus
                gpus.append({"index": index, "lost": f"no NVML handle: {e}"})
        time.sleep(THROTTLE_SAMPLE_GAP_S)
        for gpu in gpus:
            if gpu.get("throttle") is not None:
                again = _event_reasons(nvml, nvml.nvmlDeviceGetHandleByIndex(gpu["index"]), {})
                gpu["throttle"] = None if again is None else gpu["throttle"] & again
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cvd = environ.get("CUDA_VISIBLE_DEVICES")
        return {"driver": driver, "count": count, "cuda_visible_devices": cvd, "gpus": gpus}
    finally:
        nvml.nvmlShutdown()


def gpu_checks(
    system, environ: Mapping[str, str], node: str, *, own_pids: Iterable[int] = (), timeout_s: float = 20.0
) -> list[Result]:
    """The node's GPU health: NVML read in a thread bounded by `timeout_s`, then judge(). Without
    NVML: one skip Result, or a fail where the system profile expects GPUs."""
    started = time.monotonic()
    expected = system.gpus_per_node
    try:
        readings = bounded_call(lambda: read_nvml(environ), timeout_s, "NVML")
    except NvmlUnavailable as e:
        if expected:
            detail = _cut(f"expected {expected} GPUs, NVML not available: {e}")
            return [Result("gpu.count", "fail", node, threshold=float(expected), detail=detail)]
        return [Result("gpu.count", "skip", node, detail=_cut(f"NVML not available: {e}"))]
    except CheckTimeout as e:
        return [Result("gpu.nvml", "error", node, detail=f"{e}: a GPU may hang", duration_s=timeout_s)]
    except Exception as e:  # noqa: BLE001 - an NVML error outside any one GPU's fields
        return [Result("gpu.nvml", "error", node, detail=_cut(f"NVML: {type(e).__name__}: {e}"))]
    results = judge(readings, system, node, own_pids=own_pids)
    return [replace(results[0], duration_s=time.monotonic() - started), *results[1:]]


# --- judging ---------------------------------------------------------------------------------


def _limit(system, metric: str):
    """The system profile's threshold for `metric`, else the DEFAULT_LIMITS one (or None)."""
    found = system.threshold(metric)
    if found is not None or metric not in DEFAULT_LIMITS:
        return found
    from cordee.preflight.systems import Threshold

    kind, fail, warn, source = DEFAULT_LIMITS[metric]
    return Threshold(metric=metric, kind=kind, fail=fail, warn=warn, unit="", source=f"default: {source}")


def _visible(cvd: str, gpus: list[dict]) -> tuple[list[str], str | None]:
    """CUDA_VISIBLE_DEVICES entries naming a GPU NVML sees, and the first naming none (CUDA stops
    there: the devices after an invalid entry are hidden too)."""
    uuids, visible = [g.get("uuid") or "" for g in gpus], []
    for entry in (e.strip() for e in cvd.split(",")):
        index = as_int(entry)
        if index is not None:
            ok = 0 <= index < len(gpus)
        else:
            ok = entry.startswith(("GPU-", "MIG-")) and any(u.startswith(entry) for u in uuids)
        if not ok:
            return visible, entry
        visible.append(entry)
    return visible, None


def _count(readings: dict, system, node: str) -> Result:
    count, expected, gpus = readings["count"], system.gpus_per_node, readings["gpus"]
    names = ", ".join(sorted({g.get("name") or "?" for g in gpus if not g.get("lost")})) or "none"
    if expected is None:
        status, detail = "ok", f"{_gpus(count)} ({names}); system {system.name} expects none"
    else:
        status = "ok" if count == expected else "fail" if count < expected else "warn"
        detail = f"{_gpus(count)} ({names}), system {system.name} has {expected} per node"
    for g in gpus:
        if g.get("lost"):
            status, detail = "fail", f"{detail}; GPU {g['index']}: {g['lost']}"
    cvd = readings.get("cuda_visible_devices")
    if cvd is not None:
        visible, bad = _visible(cvd, gpus)
        if bad is not None:
            status = "fail"
            detail += f"; CUDA_VISIBLE_DEVICES={cvd!r} names {bad!r}, not one of the {count} GPUs NVML sees"
        elif not visible:
            status, detail = "fail", f"{detail}; CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU"
        else:
            detail += f"; CUDA_VISIBLE_DEVICES restricts this process to {len(visible)}"
    threshold = None if expected is None else float(expected)
    data = {"metric": "gpu_count", "kind": "min", "driver": readings.get("driver")}
    detail = _cut(detail)
    return Result("gpu.count", status, node, None, float(count), threshold, "GPUs", detail, data=data)


def _judged(spec: tuple, gpus: list[dict], system, node: str, ctx: dict) -> Result:
    """One Result of a per-GPU metric: the worst value against the limit, NVML errors of the field
    and extra findings (ctx["extra"][check]: (gpu index, status, message)) folded in."""
    check, metric, field, unit, value_of, fmt = spec
    values = {g["index"]: v for g in gpus if (v := value_of(g, ctx)) is not None}
    problems = [(g["index"], e["status"], e["message"]) for g in gpus if (e := g["errors"].get(field))]
    problems += ctx["extra"].get(check, [])
    if not values and not problems:
        return Result(check, "skip", node, unit=unit, detail=_cut(f"not supported on {ctx['names']}"))
    limit = _limit(system, metric)
    kind = limit.kind if limit is not None else "max"
    statuses = {i: limit.judge(v) if limit is not None else "ok" for i, v in values.items()}
    status = worst([*statuses.values(), *(s for _, s, _ in problems)])
    value = (max if kind == "max" else min)(values.values()) if values else None
    if limit is None:
        rule = f"system {system.name} sets no limit"
    else:
        rule = f"{kind} {limit.fail:g}" + (f", warn {limit.warn:g}" if limit.warn is not None else "")
    lines = [f"GPU {i}: {fmt.format(values[i])}" for i, s in statuses.items() if s != "ok"]
    if not lines and values:
        lines = [f"{_gpus(len(values))}, {'highest' if kind == 'max' else 'lowest'} {fmt.format(value)}"]
    detail = "; ".join(lines + [f"GPU {i}: {m}" for i, _, m in problems]) + f" ({rule})"
    data = {"metric": metric, "kind": kind, "gpus": {str(i): v for i, v in values.items()}}
    if limit is not None:
        data["source"] = limit.source
    threshold = limit.fail if limit is not None else None
    return Result(check, status, node, None, value, threshold, unit, _cut(detail), data=data)


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


def _mem_frac(g: dict, ctx: dict) -> float | None:
    if not g["mem_total"]:
        return None
    ours = sum(p.get("used") or 0 for p in g["procs"] or [] if p["pid"] in ctx["own"])
    return (g["mem_used"] - ours) / g["mem_total"]


def _foreign(g: dict, ctx: dict) -> float | None:
    return None if g["procs"] is None else float(sum(p["pid"] not in ctx["own"] for p in g["procs"]))


def _ratio(a: str, b: str):
    return lambda g, ctx: g[a] / g[b] if g[a] and g[b] else None


def _nvlink_down(g: dict, ctx: dict) -> float | None:
    expected = ctx["nvlink_links"]
    return None if not expected or g["nvlink_up"] is None else float(max(expected - g["nvlink_up"], 0))


# (check, metric, NVML field of its errors, unit, value of one GPU, text of a value)
METRICS = (
    ("gpu.ecc", "ecc_uncorrected", "ecc", "errors", lambda g, c: g["ecc_volatile"], "{:g} uncorrected"),
    ("gpu.retired_pages", "retired_pages_pending", "retired_pages", "GPUs",
     lambda g, c: _flag(g["retired_pending"]), "{:g} with pages pending retirement (reset the GPU)"),
    ("gpu.row_remap", "remapped_rows_pending", "row_remap", "GPUs",
     lambda g, c: _flag(g["remap_pending"]), "{:g} with rows pending remapping (reset the GPU)"),
    ("gpu.temperature", "gpu_temp_idle_c", "temperature", "C", lambda g, c: g["temp_c"], "{:g} C at idle"),
    ("gpu.memory_idle", "gpu_mem_used_idle_frac", "memory", "", _mem_frac, "{:.1%} of memory used at idle"),
    ("gpu.processes", "foreign_processes", "processes", "processes", _foreign, "{:g} foreign processes"),
    ("gpu.pcie_width", "pcie_width_ratio", "pcie", "", _ratio("pcie_width", "pcie_width_max"),
     "PCIe width {:.2f} of its maximum"),
    ("gpu.pcie_gen", "pcie_gen_ratio", "pcie", "", _ratio("pcie_gen_max", "pcie_gen_gpu_max"),
     "PCIe generation of the slot {:.2f} of the GPU's"),
    ("gpu.nvlink", "nvlink_links_down", "nvlink", "links", _nvlink_down, "{:g} NVLinks down"),
)  # fmt: skip


def _reasons(mask: int) -> tuple[str, list[str]]:
    """(status, names) of the clocks event reasons in `mask` that are not benign."""
    names, statuses = [], []
    for b in (1 << bit for bit in range(64)):
        if mask & b and b not in BENIGN_REASONS:
            names.append(FAIL_REASONS.get(b) or WARN_REASONS.get(b) or f"unknown reason {b:#x}")
            statuses.append("fail" if b in FAIL_REASONS else "warn")
    return worst(statuses), names


def _throttle(gpus: list[dict], node: str) -> Result:
    found = {g["index"]: _reasons(g["throttle"]) for g in gpus if g["throttle"] is not None}
    problems = [(g["index"], e["status"], e["message"]) for g in gpus if (e := g["errors"].get("throttle"))]
    if not found and not problems:
        return Result("gpu.throttle", "skip", node, detail="clocks event reasons not supported")
    status = worst([s for s, _ in found.values()] + [s for _, s, _ in problems])
    lines = [f"GPU {i}: {', '.join(names)}" for i, (_, names) in found.items() if names]
    lines += [f"GPU {i}: {m}" for i, _, m in problems]
    detail = "; ".join(lines) or f"{_gpus(len(found))}: no clock slowdown beyond idle, power cap or settings"
    value = float(sum(s != "ok" for s, _ in found.values()))
    masks = {str(g["index"]): g["throttle"] for g in gpus if g["throttle"] is not None}
    detail = _cut(detail)
    return Result("gpu.throttle", status, node, None, value, None, "GPUs", detail, data={"masks": masks})


def judge(readings: dict, system, node: str, *, own_pids: Iterable[int] = ()) -> list[Result]:
    """Results from read_nvml()'s readings (plain values) against the system profile."""
    gpus = [g for g in readings["gpus"] if not g.get("lost")]
    out = [_count(readings, system, node)]
    if not gpus:
        return out
    extra: dict[str, list] = {"gpu.row_remap": [], "gpu.pcie_gen": [], "gpu.ecc": []}
    for g in gpus:
        i = g["index"]
        if g["remap_failure"]:
            extra["gpu.row_remap"].append((i, "fail", "row remapping failed: the GPU needs service"))
        if g["ecc_aggregate"]:  # lifetime errors, remapped or retired since: reported, not judged
            extra["gpu.ecc"].append((i, "ok", f"{g['ecc_aggregate']} uncorrected in its lifetime"))
        # the current generation drops at idle to save power: below the maximum counts only while
        # the GPU computes (preflight reads NVML at idle, so this is for a GPU someone else keeps busy)
        busy = bool(g["util"]) and not (g["throttle"] or 0) & GPU_IDLE
        if busy and g["pcie_gen"] and g["pcie_gen_max"] and g["pcie_gen"] < g["pcie_gen_max"]:
            extra["gpu.pcie_gen"].append(
                (i, "warn", f"PCIe gen {g['pcie_gen']} of {g['pcie_gen_max']} while busy")
            )
    ctx = {"own": set(own_pids), "extra": extra, "nvlink_links": system.nvlink_links}
    ctx["names"] = ", ".join(sorted({g["name"] or "?" for g in gpus}))
    out += [_judged(spec, gpus, system, node, ctx) for spec in METRICS[:5]]
    out.append(_throttle(gpus, node))
    out += [_judged(spec, gpus, system, node, ctx) for spec in METRICS[5:]]
    if not system.nvlink_links:
        out[-1] = Result("gpu.nvlink", "skip", node, detail=f"system {system.name} names no NVLink count")
    foreign = [
        f"pid {p['pid']} on GPU {g['index']}" + (f", {p['used'] / 2**30:.1f} GiB" if p.get("used") else "")
        for g in gpus
        for p in g["procs"] or []
        if p["pid"] not in ctx["own"]
    ]
    if foreign:
        i = next(n for n, r in enumerate(out) if r.check == "gpu.processes")
        out[i] = replace(
            out[i], value=float(len(foreign)), detail=_cut(f"{', '.join(foreign)}; {out[i].detail}")
        )
    return out
