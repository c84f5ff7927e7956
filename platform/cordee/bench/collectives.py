"""Collective benchmark engine: timed and verified all_reduce, all_gather, reduce_scatter, alltoall
and sendrecv over a torch.distributed group (NCCL on GPUs, gloo on CPUs; one code path).

Bandwidths as nccl-tests defines them (doc/PERFORMANCE.md): size S is one rank's buffer for
all_reduce and sendrecv, the full (all ranks) size for all_gather, reduce_scatter and alltoall;
algbw = S / t, busbw = algbw * factor (all_reduce 2(n-1)/n; all_gather, reduce_scatter, alltoall
(n-1)/n; sendrecv 1). sendrecv is a ring: each rank sends to rank+1 and receives from rank-1 at once.

Each size: buffers allocated once; `warmup` untimed ops; a barrier; `iters` ops back to back timed
(CUDA events or perf_counter), the time being the slowest rank's; then, apart from the timing (as
nccl-tests -c), one checking op on known inputs (see cordee.bench.verify) counts wrong elements
and, for all_gather, alltoall and sendrecv, names the source ranks whose data arrived wrong.
Sizes that do not split evenly over the ranks are rounded down to a multiple (a row's
`requested_bytes` keeps the size asked for). Every op is bounded by the group's timeout; any
failure raises CollectiveError naming the op and size (exit 3).

Test-only fault switch: CORDEE_PREFLIGHT_FAULT=wrong-data:RANK makes global rank RANK contribute
wrong data (every input element + 1) in the checking pass, so a test can watch a check fail and
the culprit be named. The timing pass is never affected.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from cordee.bench import timing, verify
from cordee.bench.group import first_line
from cordee.errors import EXIT_UNKNOWN, CordeeError, InputError, shown
from cordee.numbers import parse_int

OPS = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv")
SPLIT_OPS = ("all_gather", "reduce_scatter", "alltoall")  # S is split into one chunk per rank
FAULT_VAR = "CORDEE_PREFLIGHT_FAULT"
FAULT_KINDS = ("wrong-data",)
DTYPES = {"float32": "float32", "fp32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}
DTYPES |= {"float16": "float16", "fp16": "float16"}
MAX_SIZES = 64


class CollectiveError(CordeeError):
    """A collective failed or did not finish in time: the job's state is unknown, exit 3."""

    exit_code = EXIT_UNKNOWN


@dataclass(frozen=True)
class Fault:
    kind: str  # one of the caller's known kinds, e.g. "wrong-data"
    rank: int  # global rank


@dataclass(frozen=True)
class SweepRow:
    op: str
    bytes: int  # S as nccl-tests means it, after rounding to the rank count
    ranks: int
    time_us: float  # slowest rank, per op
    algbw_gbps: float
    busbw_gbps: float
    checked: bool
    wrong: int  # wrong elements over all ranks (0 when not checked)
    wrong_ranks: tuple[int, ...]  # global ranks whose data arrived wrong (where the op tells)
    requested_bytes: int = 0  # the size asked for; differs from `bytes` when rounded
    dtype: str = ""

    @property
    def rounded(self) -> bool:
        return self.requested_bytes != self.bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "wrong_ranks": list(self.wrong_ranks), "rounded": self.rounded}


def busbw_factor(op: str, n: int) -> float:
    """busbw / algbw for `op` on `n` ranks (nccl-tests doc/PERFORMANCE.md)."""
    check_op(op)
    if n < 1:
        raise InputError(f"rank count {n} must be >= 1")
    if op == "all_reduce":
        return 2 * (n - 1) / n
    return 1.0 if op == "sendrecv" else (n - 1) / n


def check_op(op: str) -> str:
    if op not in OPS:
        raise InputError(f"collective {shown(op)} is not one of {', '.join(OPS)}")
    return op


def dtype_name(name: str) -> str:
    """Canonical torch dtype name for float32/fp32, bf16/bfloat16, float16/fp16."""
    if name not in DTYPES:
        raise InputError(f"dtype {shown(name)} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_faults(text: str, known: Sequence[str] = FAULT_KINDS) -> tuple[Fault, ...]:
    """'KIND:RANK[,KIND:RANK...]' -> Faults; InputError naming the variable on anything else."""
    faults = []
    for item in text.split(","):
        kind, sep, rank = item.strip().partition(":")
        if not sep or kind not in known:
            raise InputError(
                f"{FAULT_VAR}={shown(text)}: expected KIND:RANK with KIND one of {', '.join(known)}"
            )
        faults.append(Fault(kind, parse_int(rank, f"{FAULT_VAR} rank", lo=0)))
    return tuple(faults)


def fault_from_env(environ: Mapping[str, str], known: Sequence[str] = FAULT_KINDS) -> Fault | None:
    """The wrong-data fault that CORDEE_PREFLIGHT_FAULT asks for, if any (test-only switch)."""
    text = environ.get(FAULT_VAR, "")
    if not text.strip():
        return None
    return next((f for f in parse_faults(text, known) if f.kind == "wrong-data"), None)


def rounded_bytes(op: str, nbytes: int, n: int, itemsize: int) -> int:
    """`nbytes` rounded down to whole elements (and whole chunks per rank where S is split);
    at least one element (per rank)."""
    unit = itemsize * (n if op in SPLIT_OPS else 1)
    return max(unit, nbytes // unit * unit)


def _validate(op: str, sizes: Sequence[int], iters: int, warmup: int, timeout_s: float) -> None:
    check_op(op)
    if not sizes or len(sizes) > MAX_SIZES:
        raise InputError(f"{op}: between 1 and {MAX_SIZES} sizes, not {len(sizes)}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise InputError(f"{op}: size {shown(s)} must be a whole number of bytes >= 1")
    if iters < 1 or warmup < 0:
        raise InputError(f"{op}: iters ({iters}) must be >= 1 and warmup ({warmup}) >= 0")
    if not timeout_s > 0:
        raise InputError(f"{op}: timeout {timeout_s} must be > 0 seconds")


def sweep(
    op: str,
    sizes: Sequence[int],
    *,
    group=None,
    device: str,
    dtype: str | None = None,
    iters: int = 20,
    warmup: int = 5,
    check: bool = True,
    timeout_s: float = 60.0,
    fault: Fault | None = None,
) -> list[SweepRow]:
    """Time (and check) `op` at each size on `group` (default: the world); every rank of the group
    calls it with the same arguments and gets the same rows. Sizes in bytes, nccl-tests' S."""
    import torch
    import torch.distributed as dist

    _validate(op, sizes, iters, warmup, timeout_s)
    dtype = dtype_name(dtype or ("bf16" if timing.is_cuda(device) else "float32"))
    tdtype = getattr(torch, dtype)
    group = group or dist.group.WORLD
    n, me = dist.get_world_size(group), dist.get_rank(group)
    ranks = dist.get_process_group_ranks(group)  # group rank -> global rank
    if op == "sendrecv" and n < 2:
        raise InputError("sendrecv needs at least 2 ranks (a ring of one has no link to measure)")
    wrong_data = fault is not None and fault.kind == "wrong-data" and fault.rank == ranks[me]
    deadline = time.monotonic() + timeout_s
    rows = []
    for size in sizes:
        nbytes = rounded_bytes(op, size, n, tdtype.itemsize)
        where = f"{op} of {nbytes} bytes ({dtype}, {n} ranks) on rank {ranks[me]}"
        timing.ensure_memory(device, 2 * nbytes + verify.CHUNK * 32, where)  # buffers + check chunks
        try:
            if time.monotonic() > deadline:
                raise timing.BenchTimeout(f"sweep not done within {timeout_s:g} s")
            with timing.on_device(device):  # CUDA events belong to the current device
                bufs = _buffers(op, nbytes // tdtype.itemsize, n, tdtype, device)
                step = _step(op, bufs, group, ranks, me)
                t = _time(step, group, device, iters, warmup, deadline, where)
                wrong, culprits = (0, ())
                if check:
                    wrong, culprits = _check(op, bufs, step, group, ranks, me, device, wrong_data, deadline)
                del bufs, step  # free this size's buffers before the next size's
        except CordeeError as e:
            raise CollectiveError(f"{where}: {e}") from None
        except (RuntimeError, ValueError) as e:  # torch.distributed errors, out of memory
            raise CollectiveError(f"{where} failed: {first_line(e)}") from None
        algbw = nbytes / t / 1e9
        rows.append(
            SweepRow(
                op=op,
                bytes=nbytes,
                ranks=n,
                time_us=t * 1e6,
                algbw_gbps=algbw,
                busbw_gbps=algbw * busbw_factor(op, n),
                checked=check,
                wrong=wrong,
                wrong_ranks=culprits,
                requested_bytes=size,
                dtype=dtype,
            )
        )
    if timing.is_cuda(device):
        torch.cuda.empty_cache()
    return rows


def _buffers(op: str, count: int, n: int, tdtype, device: str) -> tuple:
    """(input, output) of `count` elements of S; zeros, so repeated reductions stay finite."""
    import torch

    chunk = count // n
    if op == "all_reduce":
        buf = torch.zeros(count, dtype=tdtype, device=device)
        return buf, buf  # in place, as torch.distributed does it
    if op == "all_gather":
        return torch.zeros(chunk, dtype=tdtype, device=device), torch.zeros(
            count, dtype=tdtype, device=device
        )
    if op == "reduce_scatter":
        return torch.zeros(count, dtype=tdtype, device=device), torch.zeros(
            chunk, dtype=tdtype, device=device
        )
    return torch.zeros(count, dtype=tdtype, device=device), torch.zeros(count, dtype=tdtype, device=device)


def _step(op: str, bufs: tuple, group, ranks: list[int], me: int):
    """One op as a no-argument call, bound once: the timed loop adds nothing per iteration that a
    plain `for _ in range(k): dist.all_reduce(t)` loop would not."""
    import torch.distributed as dist

    inp, out = bufs
    if op == "all_reduce":
        return functools.partial(dist.all_reduce, inp, group=group)
    if op == "all_gather":  # all_gather_single: the name since torch 2.13, same kernel
        return functools.partial(
            getattr(dist, "all_gather_single", dist.all_gather_into_tensor), out, inp, group=group
        )
    if op == "reduce_scatter":
        fn = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)
        return functools.partial(fn, out, inp, group=group)
    if op == "alltoall":
        return functools.partial(dist.all_to_all_single, out, inp, group=group)
    n = len(ranks)
    ring = [
        dist.P2POp(dist.isend, inp, ranks[(me + 1) % n], group),
        dist.P2POp(dist.irecv, out, ranks[(me - 1) % n], group),
    ]

    def sendrecv() -> None:
        for work in dist.batch_isend_irecv(ring):
            work.wait()

    return sendrecv


def _time(step, group, device: str, iters: int, warmup: int, deadline: float, where: str) -> float:
    for _ in range(warmup):
        step()
    timing.barrier(group, device, deadline)
    local = timing.time_loop(step, iters, device, deadline, where)
    return timing.max_over_ranks(local, group, device, deadline)


def _check(op, bufs, step, group, ranks, me, device, wrong_data, deadline) -> tuple[int, tuple[int, ...]]:
    """One op on known inputs; (wrong elements over all ranks, global ranks named as sources)."""
    import torch
    import torch.distributed as dist

    inp, out = bufs
    n = len(ranks)
    verify.fill(op, inp, me, n, wrong_data)
    if out is not inp:
        out.fill_(-1)  # stale timing-pass data must not pass for a result
    timing.barrier(group, device, deadline)
    step()
    counts = torch.zeros(n + 1, dtype=torch.int64, device=device)  # per source rank, then total
    verify.compare(op, out, me, n, counts)
    dist.all_reduce(counts, group=group)
    timing.wait_device(device, deadline, "check")
    counts = counts.tolist()
    return counts[n], tuple(ranks[q] for q in range(n) if counts[q])
