"""Dense matrix multiply throughput: n x n times n x n, TFLOP/s = 2 n^3 / t.

GPU: bf16, n = 8192 by default (the size GPU vendors and the preflight quote); CPU: float32,
n = 1024 (a check of the cores, not a GPU stand-in). The timed loop calls torch.matmul into a
preallocated output, `iters` times back to back after `warmup` calls, timed with CUDA events
(perf_counter on the CPU). `torch_matmul_reference` is the plain loop a user would write
(new output each call, synchronize + perf_counter) so a benchmark can compare both in one run.
"""

from __future__ import annotations

import functools
import time

from cordee.bench import timing
from cordee.bench.collectives import dtype_name
from cordee.errors import InputError

MAX_N = 65536


def defaults(device: str) -> tuple[int, str]:
    """(n, dtype) for a device: 8192 bf16 on a GPU, 1024 float32 on the CPU."""
    return (8192, "bfloat16") if timing.is_cuda(device) else (1024, "float32")


def _operands(device: str, n: int | None, dtype: str | None, iters: int, warmup: int):
    import torch

    default_n, default_dtype = defaults(device)
    n = default_n if n is None else n
    dtype = dtype_name(dtype) if dtype else default_dtype
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise InputError(f"gemm: n {n!r} must be an integer in 1..{MAX_N}")
    if iters < 1 or warmup < 0:
        raise InputError(f"gemm: iters ({iters}) must be >= 1 and warmup ({warmup}) >= 0")
    itemsize = getattr(torch, dtype).itemsize
    timing.ensure_memory(device, n * n * (3 * itemsize + 4), f"gemm {n}^3 {dtype}")  # a, b, out, fp32 temp
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen, device=device).to(getattr(torch, dtype)) for _ in range(2))
    return n, dtype, a, b


def _result(device: str, n: int, dtype: str, seconds: float, iters: int, warmup: int, how: str) -> dict:
    flops = 2 * n**3 / seconds
    return {
        "tflops": flops / 1e12,
        "gflops": flops / 1e9,
        "n": n,
        "dtype": dtype,
        "seconds": seconds,  # per multiply
        "iters": iters,
        "warmup": warmup,
        "device": device,
        "timing": how,
    }


def gemm(
    device: str,
    *,
    n: int | None = None,
    dtype: str | None = None,
    iters: int = 20,
    warmup: int = 5,
    timeout_s: float = 120.0,
) -> dict:
    """The engine: {"tflops", "gflops", "n", "dtype", "seconds" (per multiply), ...}."""
    import torch

    deadline = time.monotonic() + timeout_s
    with timing.on_device(device), timing.torch_failures(f"gemm on {device}"):
        n, dtype, a, b = _operands(device, n, dtype, iters, warmup)
        out = torch.empty_like(a)
        step = functools.partial(torch.matmul, a, b, out=out)
        for _ in range(warmup):
            step()
        timing.wait_device(device, deadline, f"gemm {n}^3 warmup")
        seconds = timing.time_loop(step, iters, device, deadline, f"gemm {n}^3")
        del a, b, out, step
        if timing.is_cuda(device):
            torch.cuda.empty_cache()
    how = "cuda events" if timing.is_cuda(device) else "perf_counter"
    return _result(device, n, dtype, seconds, iters, warmup, how)


def torch_matmul_reference(
    device: str, *, n: int | None = None, dtype: str | None = None, iters: int = 20, warmup: int = 5
) -> dict:
    """The plain loop: `c = a @ b` calls between synchronize + perf_counter; same dict."""
    import torch

    with timing.on_device(device), timing.torch_failures(f"gemm on {device}"):
        n, dtype, a, b = _operands(device, n, dtype, iters, warmup)
        sync = torch.cuda.synchronize if timing.is_cuda(device) else (lambda: None)
        for _ in range(warmup):
            torch.matmul(a, b)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        sync()
        seconds = (time.perf_counter() - t0) / iters
        del a, b
        if timing.is_cuda(device):
            torch.cuda.empty_cache()
    return _result(device, n, dtype, seconds, iters, warmup, "synchronize + perf_counter")
