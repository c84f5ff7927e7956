"""Per-step training metrics: MFU against a table of peak dense bf16 FLOP/s by GPU model, the
step record (a JSONL line per step, written by rank 0) and its console line, and the slowest
rank of a step."""

from __future__ import annotations

import json
import math
import os
import statistics

from cordee.errors import CordeeError, shown

# GPU model substring -> (peak dense bf16 tensor TFLOP/s, source). Datasheets print the figure
# with 2:4 sparsity; dense is half of it. Matched case-insensitively, longest substring first,
# against torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3", "NVIDIA GH200 480GB", ...).
PEAK_BF16_TFLOPS: dict[str, tuple[float, str]] = {
    "GH200": (989.0, "NVIDIA GH200 Grace Hopper Superchip datasheet: 1,979 TFLOP/s bf16 sparse"),
    "H200 NVL": (835.5, "NVIDIA H200 datasheet, H200 NVL column: 1,671 TFLOP/s bf16 sparse"),
    "H200": (989.0, "NVIDIA H200 datasheet, H200 SXM column: 1,979 TFLOP/s bf16 sparse"),
    "H100 NVL": (835.5, "NVIDIA H100 datasheet, H100 NVL column: 1,671 TFLOP/s bf16 sparse"),
    "H100 PCIe": (756.5, "NVIDIA H100 datasheet, H100 PCIe column: 1,513 TFLOP/s bf16 sparse"),
    "H100": (989.0, "NVIDIA H100 datasheet, H100 SXM column: 1,979 TFLOP/s bf16 sparse"),
    "A100": (312.0, "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense (SXM and PCIe)"),
}


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it comes from) for one GPU; (None, why) when it is not known: then MFU
    is not reported (the loop says so once)."""
    if override is not None:
        return override, "peak_tflops set in the config"
    name = device_name.lower()
    for model in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if model.lower() in name:
            return PEAK_BF16_TFLOPS[model]
    return None, f"no peak FLOP/s known for {shown(device_name)}: MFU not reported (set peak_tflops)"


def mfu(tokens_per_s_per_gpu: float, flops_per_token: float, peak_tflops: float) -> float:
    """Model FLOPs utilization, a fraction: achieved model FLOP/s of one GPU / its peak."""
    if not peak_tflops > 0:
        raise ValueError(f"peak_tflops must be > 0, not {peak_tflops}")
    return tokens_per_s_per_gpu * flops_per_token / (peak_tflops * 1e12)


def slowest_rank(step_times: list[float]) -> tuple[int, float]:
    """(rank with the longest step time, its time / the median of all ranks): a straggler shows as
    a ratio well above 1 on the same rank step after step."""
    if not step_times:
        raise ValueError("no step times")
    rank = max(range(len(step_times)), key=step_times.__getitem__)
    median = statistics.median(step_times)
    return rank, (step_times[rank] / median if median > 0 else 1.0)


def step_record(
    *,
    step: int,
    loss: float,
    lr: float,
    grad_norm: float,
    tokens: int,
    step_time_s: float,
    world_size: int,
    flops_per_token: float,
    peak_tflops: float | None,
    peak_mem_bytes: int | None = None,
    rank_step_times: list[float] | None = None,
    device: str = "cuda",
) -> dict:
    """One step's metrics as the JSONL record (schema cordee.train.step/1). `tokens` counts the
    whole step across ranks; `rank_step_times` (index = rank), when gathered, names the slowest."""
    per_s = tokens / step_time_s if step_time_s > 0 else 0.0
    per_device = per_s / world_size
    record = {
        "schema": "cordee.train.step/1",
        "step": step,
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": tokens,
        "step_time_s": step_time_s,
        "tokens_per_s": per_s,
        "tokens_per_s_per_device": per_device,
        "device": device,
        "world_size": world_size,
        "mfu": mfu(per_device, flops_per_token, peak_tflops) if peak_tflops else None,
        "peak_mem_gib": peak_mem_bytes / 2**30 if peak_mem_bytes is not None else None,
    }
    if rank_step_times:
        rank, ratio = slowest_rank(rank_step_times)
        record |= {"slowest_rank": rank, "slowest_ratio": ratio, "max_step_time_s": rank_step_times[rank]}
    return record


def _si(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def format_step(record: dict) -> str:
    """The console line of a step record; keys that are absent or None are left out."""
    r = record
    unit = "GPU" if r.get("device") == "cuda" else "rank"
    parts = [f"step {r['step']}"]
    pieces = [
        ("loss", lambda v: f"loss {v:.4f}"),
        ("lr", lambda v: f"lr {v:.2e}"),
        ("grad_norm", lambda v: f"grad {v:.3f}"),
        ("tokens_per_s", lambda v: f"{_si(v)} tok/s"),
        ("tokens_per_s_per_device", lambda v: f"{_si(v)} tok/s/{unit}"),
        ("mfu", lambda v: f"MFU {100 * v:.1f}%"),
        ("step_time_s", lambda v: f"{v:.3f} s/step"),
        ("peak_mem_gib", lambda v: f"mem {v:.1f} GiB"),
        ("slowest_ratio", lambda v: f"slowest rank {r.get('slowest_rank')} x{v:.2f}"),
    ]
    parts += [show(r[key]) for key, show in pieces if isinstance(r.get(key), int | float)]
    return " | ".join(parts)


def _json_safe(value):
    """NaN and infinity are not JSON: a diverged loss is written as null (the console shows it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class MetricsLog:
    """Appends one JSON line per step to `path`, written by rank 0 only (others do nothing). Each
    line goes out in a single write() on an O_APPEND descriptor: a reader, or a crash, sees whole
    lines; a resumed run appends to the same file."""

    def __init__(self, path: str | None, rank: int) -> None:
        self.path = path or None
        self.fd: int | None = None
        if self.path and rank == 0:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self.fd = os.open(self.path, flags, 0o644)
            except OSError as e:
                raise CordeeError(
                    f"metrics_file {shown(self.path)}: cannot open: {e.strerror or e}"
                ) from None

    def log(self, step_record: dict) -> None:
        if self.fd is None:
            return
        line = json.dumps(_json_safe(step_record), allow_nan=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        try:
            written = os.write(self.fd, data)
            while written < len(data):  # a regular file takes it whole; a pipe or a full disk may not
                written += os.write(self.fd, data[written:])
        except OSError as e:
            raise CordeeError(f"metrics_file {shown(self.path)}: cannot write: {e.strerror or e}") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
