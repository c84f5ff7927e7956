"""Device memory bandwidth: one buffer copied into another, GB/s = 2 x bytes / t (each byte is read
once and written once, the convention of STREAM's copy and of GPU vendors' device-copy figures).

GPU: 1 GiB by default (far beyond any cache, so HBM is measured); CPU: 64 MiB, a main-memory
copy. The timed loop is `dst.copy_(src)`, `iters` times back to back after `warmup` copies,
timed with CUDA events (perf_counter on the CPU); afterwards the copy is compared with its source.
`torch_copy_reference` is the same copy timed the plain way (synchronize + perf_counter) so a
benchmark can compare both in one run.
"""

from __future__ import annotations

import functools
import time

from cordee.bench import timing
from cordee.errors import InputError

MAX_BYTES = 1 << 36  # 64 GiB: two buffers of it fit on the largest GPUs; far past any cache


def default_bytes(device: str) -> int:
    return 1 << 30 if timing.is_cuda(device) else 64 << 20


def _buffers(device: str, nbytes: int | None, iters: int, warmup: int):
    nbytes = default_bytes(device) if nbytes is None else nbytes
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 1 <= nbytes <= MAX_BYTES:
        raise InputError(f"hbm: size {nbytes!r} must be a number of bytes in 1..{MAX_BYTES}")
    if iters < 1 or warmup < 0:
        raise InputError(f"hbm: iters ({iters}) must be >= 1 and warmup ({warmup}) >= 0")
    timing.ensure_memory(device, 2 * nbytes, f"copy of {nbytes} bytes")
    import torch  # after the checks: bad input is refused without the cost of importing torch

    gen = torch.Generator(device=device).manual_seed(0)  # random bytes: a wrong copy cannot pass
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 256, generator=gen)  # no temporary
    return nbytes, src, torch.empty_like(src)


def _result(device: str, nbytes: int, seconds: float, iters: int, warmup: int, how: str, **extra) -> dict:
    return {
        "gbps": 2 * nbytes / seconds / 1e9,
        "bytes": nbytes,
        "seconds": seconds,  # per copy
        "iters": iters,
        "warmup": warmup,
        "device": device,
        "timing": how,
        **extra,
    }


def copy_bandwidth(
    device: str, *, nbytes: int | None = None, iters: int = 20, warmup: int = 5, timeout_s: float = 120.0
) -> dict:
    """The engine: {"gbps" (read + write), "bytes", "seconds" (per copy), "verified", ...}."""
    deadline = time.monotonic() + timeout_s
    with timing.on_device(device), timing.torch_failures(f"device copy on {device}"):
        nbytes, src, dst = _buffers(device, nbytes, iters, warmup)
        import torch

        step = functools.partial(dst.copy_, src)
        for _ in range(warmup):
            step()
        timing.wait_device(device, deadline, f"copy of {nbytes} bytes, warmup")
        seconds = timing.time_loop(step, iters, device, deadline, f"copy of {nbytes} bytes")
        verified = bool(torch.equal(dst, src))
        del src, dst, step
        if timing.is_cuda(device):
            torch.cuda.empty_cache()
    how = "cuda events" if timing.is_cuda(device) else "perf_counter"
    return _result(device, nbytes, seconds, iters, warmup, how, verified=verified)


def torch_copy_reference(device: str, *, nbytes: int | None = None, iters: int = 20, warmup: int = 5) -> dict:
    """The same copy timed the plain way (synchronize + perf_counter); same dict."""
    with timing.on_device(device), timing.torch_failures(f"device copy on {device}"):
        nbytes, src, dst = _buffers(device, nbytes, iters, warmup)
        import torch

        sync = torch.cuda.synchronize if timing.is_cuda(device) else (lambda: None)
        for _ in range(warmup):
            dst.copy_(src)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            dst.copy_(src)
        sync()
        seconds = (time.perf_counter() - t0) / iters
        verified = bool(torch.equal(dst, src))
        del src, dst
        if timing.is_cuda(device):
            torch.cuda.empty_cache()
    return _result(device, nbytes, seconds, iters, warmup, "synchronize + perf_counter", verified=verified)
