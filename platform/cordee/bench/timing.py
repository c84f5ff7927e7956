"""Device timers of the bench engines.

GPU: two CUDA events on the current stream around the timed loop (a collective's stream is
joined to the current one when the call returns, so the end event follows the last op); the
host waits by polling the end event against a deadline, so a stuck kernel or collective becomes
an error instead of a hang. CPU: time.perf_counter around the loop (gloo and CPU kernels run on
the calling thread). A collective's time is the slowest rank's: one all_reduce MAX of the local
times, which costs one small op and is what the users of the collective wait for.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from cordee.bench.group import first_line
from cordee.errors import EXIT_UNKNOWN, CordeeError, InputError

POLL_S = 0.0005  # the host's polling interval; GPU time is measured by the events, not by this


class BenchTimeout(CordeeError):
    """The device did not finish in time: state unknown, exit 3."""

    exit_code = EXIT_UNKNOWN


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def on_device(device: str):
    """A context in which `device` is the current CUDA device (events and streams are per device);
    nothing on the CPU."""
    if is_cuda(device):
        import torch

        return torch.cuda.device(device)
    return contextlib.nullcontext()


@contextlib.contextmanager
def torch_failures(what: str):
    """torch's RuntimeErrors (out of memory, a CUDA error) as one-line CordeeErrors."""
    try:
        yield
    except RuntimeError as e:
        raise CordeeError(f"{what} failed: {first_line(e)}") from None


def free_memory(device: str) -> int | None:
    """Bytes that can still be allocated on `device` (the GPU's free memory; MemAvailable of
    /proc/meminfo for the CPU), None when unknown."""
    if is_cuda(device):
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def ensure_memory(device: str, nbytes: int, what: str) -> None:
    """InputError when `what` needs more memory than `device` has free: refused up front, rather
    than an out-of-memory error halfway or, on the CPU, the kernel's OOM killer."""
    free = free_memory(device)
    if free is not None and nbytes > free:
        raise InputError(f"{what} needs {nbytes} bytes on {device}, which has {free} free")


def _wait_event(event, deadline: float, what: str) -> None:
    while not event.query():
        if time.monotonic() > deadline:
            raise BenchTimeout(f"{what}: the GPU had not finished at the deadline")
        time.sleep(POLL_S)


def wait_device(device: str, deadline: float, what: str) -> None:
    """Wait until the work queued on the current stream is done (no-op on the CPU)."""
    if is_cuda(device):
        import torch

        done = torch.cuda.Event()
        done.record()
        _wait_event(done, deadline, what)


def time_loop(step: Callable[[], object], iters: int, device: str, deadline: float, what: str) -> float:
    """Seconds per call of `step`, called `iters` times back to back on this rank."""
    if is_cuda(device):
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        _wait_event(end, deadline, what)
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters


def barrier(group, device: str, deadline: float) -> None:
    """Every rank of `group` has arrived (a one-element all_reduce, waited for)."""
    import torch
    import torch.distributed as dist

    dist.all_reduce(torch.zeros(1, device=device), group=group)
    wait_device(device, deadline, "barrier")


def max_over_ranks(value: float, group, device: str, deadline: float) -> float:
    """The largest `value` over the ranks of `group` (every rank calls it)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    wait_device(device, deadline, "max over ranks")
    return float(t.item())
