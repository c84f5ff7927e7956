"""The preflight checks that need torch: GEMM and device-memory copy on every rank, a fixed piece
of work timed on every rank (stragglers), verified collectives within and across nodes, and the
pair test that isolates bad nodes (checks_pairs). They wrap the engines of cordee.bench.

Process groups are formed on first use and kept in the context: the default group (NCCL on GPUs,
gloo on CPUs), a gloo control group for small exchanges (the same group on CPUs), and the
per-node / per-local-rank groups of the collective checks. torch is imported inside functions
only: the registry loads this module by name, and only for the standard and long levels."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from cordee.preflight.context import Context
from cordee.preflight.results import Check, Result

OPS = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv")
SCOPES = ("intra", "inter")  # among the ranks of one node / among one rank per node
TIMEOUT_S = {"gemm": 60.0, "copy": 60.0, "work": 60.0, "collective": 60.0}
# (n of an n^3 matmul, repeats): 0.1-0.3 s alone on a CPU core or an H200, long enough
# for a rank that is descheduled or throttled part of the time to show it
STRAGGLER_WORK = {"cpu": (256, 400), "cuda": (8192, 200)}


def checks(level: str) -> list[Check]:
    """The torch checks, in the order they run. The long level runs each longer (Context.scale),
    with timeouts to match."""
    k = 5 if level == "long" else 1
    out = [
        Check("compute.gemm", "rank", "standard", TIMEOUT_S["gemm"] * k, gemm_check),
        Check("memory.copy", "rank", "standard", TIMEOUT_S["copy"] * k, copy_check),
        Check("straggler.work", "job", "standard", TIMEOUT_S["work"] * k, straggler_work),
    ]
    for scope in SCOPES:
        for op in OPS:
            run = functools.partial(collective_check, op=op, scope=scope)
            out.append(Check(f"collective.{op}.{scope}", "job", "standard", TIMEOUT_S["collective"] * k, run))
    from cordee.preflight.checks_pairs import isolation_check

    out.append(Check("isolation", "job", "standard", 120.0 * k, isolation_check))
    return out


# --- process groups ---------------------------------------------------------------------------


@dataclass
class Dist:
    device: str  # "cpu" | "cuda:K"
    control: object  # gloo group over every rank (None: the default group is gloo already)
    where: list[tuple[str, int]]  # rank -> (node, local rank), as every rank said it

    def nodes(self) -> list[str]:
        """Node names in the order of their lowest rank."""
        return list(dict.fromkeys(node for node, _ in self.where))

    def ranks_by(self, scope: str) -> list[list[int]]:
        """intra: the ranks of each node; inter: for each local rank, that rank of every node."""
        groups: dict[object, list[int]] = {}
        for rank, (node, local) in enumerate(self.where):
            groups.setdefault(node if scope == "intra" else local, []).append(rank)
        return list(groups.values())


def dist_of(ctx: Context) -> Dist:
    """The default group (formed on first use) and what every rank said about where it runs."""
    if "dist" in ctx.cache:
        return ctx.cache["dist"]
    import torch
    import torch.distributed as dist

    from cordee.bench import group

    info = group.init_group(ctx.backend, ctx.pg_timeout_s, device=ctx.device, environ=ctx.environ)
    if not info.device.startswith("cuda"):
        # One thread per CPU rank: the CPU path serves CI (cpu-ci judges one core), and an intra-op
        # pool on cores shared with other ranks spins and turns every timing into noise.
        torch.set_num_threads(1)
    control = None if ctx.backend == "gloo" else group.cpu_group(ctx.pg_timeout_s)
    where: list = [None] * ctx.world_size
    dist.all_gather_object(where, (ctx.node, ctx.local_rank), group=control)
    ctx.cache["dist"] = Dist(info.device, control, [(str(n), int(lr)) for n, lr in where])
    return ctx.cache["dist"]


def subgroup(ctx: Context, scope: str):
    """(this rank's group, its global ranks) for `scope`; every rank forms every group, in the
    same order (torch.distributed.new_group is collective)."""
    key = f"group.{scope}"
    if key not in ctx.cache:
        import torch.distributed as dist

        lists = dist_of(ctx).ranks_by(scope)
        mine, _ = dist.new_subgroups_by_enumeration(lists)
        ctx.cache[key] = (mine, next(r for r in lists if ctx.rank in r))
    return ctx.cache[key]


def control_barrier(ctx: Context) -> None:
    import torch.distributed as dist

    dist.barrier(group=dist_of(ctx).control)


def gather_objects(ctx: Context, obj) -> list:
    """Every rank's `obj`, on every rank (the control group: small, CPU)."""
    import torch.distributed as dist

    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj, group=dist_of(ctx).control)
    return out


# --- checks of one rank -----------------------------------------------------------------------


def judged(ctx: Context, check: str, metric: str, value: float, unit: str, detail: str, **data) -> Result:
    """A measurement against the system profile's threshold for `metric` (ok without one)."""
    limit = ctx.profile.threshold(metric)
    status = limit.judge(value) if limit is not None else "ok"
    if limit is not None:
        sign = ">=" if limit.kind == "min" else "<="
        detail += f" (must be {sign} {limit.fail:g} {limit.unit}; {limit.source})"
    extra = {"metric": metric, **data}
    return Result(
        check, status, ctx.node, ctx.rank, value, limit.fail if limit else None, unit, detail, data=extra
    )


def gemm_check(ctx: Context) -> list[Result]:
    from cordee.bench.gemm import gemm

    dev = dist_of(ctx).device
    cuda = dev.startswith("cuda")
    r = gemm(dev, n=None if cuda else 256, iters=20 * ctx.scale if cuda else 5 * ctx.scale, warmup=3)
    if cuda:
        return [
            judged(
                ctx,
                "compute.gemm",
                "gemm_bf16_tflops",
                r["tflops"],
                "TFLOP/s",
                f"{r['n']}^3 {r['dtype']} matmul on {dev}: {r['tflops']:.1f} TFLOP/s",
                n=r["n"],
            )
        ]
    return [
        judged(
            ctx,
            "compute.gemm",
            "cpu_gemm_gflops",
            r["gflops"],
            "GFLOP/s",
            f"{r['n']}^3 {r['dtype']} matmul on the CPU: {r['gflops']:.2f} GFLOP/s",
            n=r["n"],
        )
    ]


def copy_check(ctx: Context) -> list[Result]:
    from cordee.bench.hbm import copy_bandwidth

    dev = dist_of(ctx).device
    cuda = dev.startswith("cuda")
    r = copy_bandwidth(dev, nbytes=None if cuda else 8 << 20, iters=20 * ctx.scale, warmup=3)
    metric = "hbm_copy_gbps" if cuda else "mem_copy_gbps"
    detail = f"copy of {r['bytes'] >> 20} MiB on {dev}: {r['gbps']:.1f} GB/s read+write"
    res = judged(ctx, "memory.copy", metric, r["gbps"], "GB/s", detail, bytes=r["bytes"])
    if not r.get("verified", True):
        return [
            Result(
                res.check,
                "fail",
                ctx.node,
                ctx.rank,
                res.value,
                res.threshold,
                res.unit,
                f"the copy came out wrong: {detail}",
                data=res.data,
            )
        ]
    return [res]


def straggler_work(ctx: Context) -> list[Result]:
    """The same fixed work on every rank, started together, timed on each: a rank much slower
    than the median is a straggler (judged by the collector, which has every rank's time)."""
    import torch

    from cordee.bench import timing

    dev = dist_of(ctx).device
    n, repeats = STRAGGLER_WORK["cuda" if dev.startswith("cuda") else "cpu"]
    repeats *= ctx.scale
    dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.rand(n, n, generator=gen, device=dev, dtype=dtype)
    b = torch.rand(n, n, generator=gen, device=dev, dtype=dtype)
    out = torch.empty_like(a)
    torch.matmul(a, b, out=out)  # first call: kernels chosen and loaded outside the timing
    timing.wait_device(dev, time.monotonic() + 60, "straggler warmup")
    control_barrier(ctx)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b, out=out)
    timing.wait_device(dev, time.monotonic() + TIMEOUT_S["work"] * ctx.scale, "straggler work")
    seconds = time.perf_counter() - started
    detail = f"{repeats} x {n}^3 matmul on {dev}: {seconds:.3f} s"
    data = {"metric": "straggler_time_s", "n": n, "repeats": repeats}
    return [Result("straggler.work", "ok", ctx.node, ctx.rank, seconds, None, "s", detail, data=data)]


# --- collectives ------------------------------------------------------------------------------


def sweep_sizes(ctx: Context) -> list[int]:
    sizes = sorted(set(ctx.profile.sweep))
    if ctx.level == "long":  # the long level goes 4x past the standard sweep
        sizes += [sizes[-1] * 2, sizes[-1] * 4]
    return sizes


def collective_check(ctx: Context, *, op: str, scope: str) -> list[Result]:
    """`op` swept over the profile's sizes and verified, within each node (intra) or across the
    nodes (inter: one group per local rank). The first rank of each group reports; thresholds
    are applied where all results meet (aggregate.judge_collectives)."""
    from cordee.bench.collectives import fault_from_env, sweep

    check = f"collective.{op}.{scope}"
    d = dist_of(ctx)
    lists = d.ranks_by(scope)
    if max(len(r) for r in lists) < 2:
        if ctx.rank != 0:
            return []
        why = "one rank per node" if scope == "intra" else "one node"
        return [Result(check, "skip", detail=f"{why}: no {scope}-node group to test")]
    group, members = subgroup(ctx, scope)
    if len(members) < 2:
        return []
    cuda = d.device.startswith("cuda")
    iters, warmup = (20 if cuda else 5) * ctx.scale, 2
    timeout = TIMEOUT_S["collective"] * ctx.scale
    rows = sweep(
        op,
        sweep_sizes(ctx),
        group=group,
        device=d.device,
        iters=iters,
        warmup=warmup,
        check=True,
        timeout_s=timeout,
        fault=fault_from_env(ctx.environ),
    )
    if ctx.rank != members[0]:
        return []
    nodes = sorted({d.where[r][0] for r in members})
    wrong = [r for r in rows if r.wrong]
    if wrong:
        culprits = sorted({c for r in wrong for c in r.wrong_ranks})
        named = ", ".join(f"rank {c} on {d.where[c][0]}" for c in culprits) or "a rank this op cannot name"
        sizes = ", ".join(f"{r.bytes} B" for r in wrong)
        detail = f"wrong results from {named}: {sum(r.wrong for r in wrong)} elements wrong at {sizes}"
        status = "fail"
    else:
        best = max(rows, key=lambda r: r.busbw_gbps)
        detail = f"{len(rows)} sizes verified; best busbw {best.busbw_gbps:.2f} GB/s at {best.bytes} B"
        status = "ok"
    data = {
        "metric": f"{op}_busbw_{scope}_gbps",
        "op": op,
        "scope": scope,
        "ranks": members,
        "nodes": nodes,
        "rows": [r.as_dict() for r in rows],
        "wrong_ranks": sorted({c for r in wrong for c in r.wrong_ranks}),
    }
    node = ctx.node if scope == "intra" else ""
    return [Result(check, status, node, ctx.rank, None, None, "GB/s", detail, data=data)]
