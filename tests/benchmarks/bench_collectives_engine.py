"""The collective engine (cordee.bench.collectives.sweep) against a plain torch.distributed loop:
all_reduce busbw at the same sizes, in the same processes, in the same run.

Target: engine busbw / plain busbw >= 0.95 at every size (the engine adds a barrier, device
timers and a checking pass outside the timed loop, nothing inside it). The plain loop is what a
user would write: warmup calls, dist.barrier(), then `for _ in range(iters): dist.all_reduce(t)`
between perf_counter reads (plus torch.cuda.synchronize on GPUs), the slowest rank's time.
At each size both sides run one after the other, which one first alternating, for --rounds
rounds, so drift of a shared machine hits both. Each side's figure is its best round (other
load only ever slows a run down, so the best round is the closest to the cost of the code
itself, as timeit's minimum); the ratio of the medians is recorded too.

Two modes:
- driver (default): starts --nproc local ranks with `cordee launch --nproc-per-node N` running
  this script with --per-rank (gloo on CPUs unless --device says otherwise);
- --per-rank: one rank of a job started by any launcher (srun, torchrun, cordee launch): the rank,
  world size and rendezvous come from the environment (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT,
  or a Slurm step's variables); rank 0 prints the table and writes
  tests/benchmarks/results/<--name>.json, e.g.
  `srun -N2 --ntasks-per-node=1 python tests/benchmarks/bench_collectives_engine.py --per-rank`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLATFORM_DIR = str(HERE.parents[1] / "platform")
TARGET_RATIO = 0.95


def plain_all_reduce(nbytes: int, dtype, device: str, iters: int, warmup: int) -> float:
    """Seconds per all_reduce of the plain loop, slowest rank."""
    import torch
    import torch.distributed as dist

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t = torch.zeros(nbytes // dtype.itemsize, dtype=dtype, device=device)
    for _ in range(warmup):
        dist.all_reduce(t)
    sync()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(t)
    sync()
    took = torch.tensor([(time.perf_counter() - t0) / iters], dtype=torch.float64, device=device)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    return float(took.item())


def per_rank(args) -> int:
    import torch

    from cordee.bench import collectives, group

    info = group.init_group(timeout_s=args.timeout, device=args.device)
    dtype_name = collectives.dtype_name(
        args.dtype or ("bf16" if info.device.startswith("cuda") else "float32")
    )
    dtype = getattr(torch, dtype_name)
    n = info.world_size
    factor = collectives.busbw_factor("all_reduce", n)
    busbw = {"engine": {s: [] for s in args.sizes}, "plain": {s: [] for s in args.sizes}}
    wrong = 0
    for rnd in range(args.rounds):
        for i, s in enumerate(args.sizes):  # engine and plain side by side at each size
            for side in ("engine", "plain") if (rnd + i) % 2 == 0 else ("plain", "engine"):
                if side == "engine":
                    (row,) = collectives.sweep(
                        "all_reduce",
                        [s],
                        device=info.device,
                        dtype=dtype_name,
                        iters=args.iters,
                        warmup=args.warmup,
                        timeout_s=args.timeout,
                    )
                    wrong += row.wrong
                    busbw["engine"][s].append(row.busbw_gbps)
                else:
                    t = plain_all_reduce(s, dtype, info.device, args.iters, args.warmup)
                    busbw["plain"][s].append(s // dtype.itemsize * dtype.itemsize / t / 1e9 * factor)
    group.destroy()
    if info.rank != 0:
        return 0
    return report(args, info, dtype_name, busbw, wrong)


def report(args, info, dtype_name: str, busbw: dict, wrong: int) -> int:
    import torch
    from common import print_table, write_result

    sizes = []
    for s in args.sizes:
        eng, pln = busbw["engine"][s], busbw["plain"][s]
        sizes.append(
            {
                "bytes": s,
                "engine_busbw_gbps": max(eng),
                "plain_busbw_gbps": max(pln),
                "ratio": max(eng) / max(pln),
                "median_ratio": statistics.median(eng) / statistics.median(pln),
                "engine_rounds": eng,
                "plain_rounds": pln,
            }
        )
    worst = min(x["ratio"] for x in sizes)
    results = {
        "collective": "all_reduce",
        "backend": info.backend,
        "device": info.device,
        "dtype": dtype_name,
        "ranks": info.world_size,
        "nodes": info.launch.nnodes,
        "scheduler": info.launch.scheduler,
        "iters": args.iters,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "target_ratio": TARGET_RATIO,
        "worst_ratio": worst,
        "within_target": worst >= TARGET_RATIO,
        "engine_check_wrong_elements": wrong,
        "load_average_1_5_15min": os.getloadavg(),  # other work on the machine: the noise floor
        "sizes": sizes,
    }
    rows = [
        (
            x["bytes"],
            f"{x['engine_busbw_gbps']:.3f}",
            f"{x['plain_busbw_gbps']:.3f}",
            f"{x['ratio']:.3f}",
            f"{x['median_ratio']:.3f}",
        )
        for x in sizes
    ]
    title = f"all_reduce busbw GB/s, {info.world_size} ranks, {info.backend} on {info.device}, {dtype_name}"
    print_table(title, rows, ("bytes", "engine", "plain loop", "ratio", "median ratio"))
    verdict = "ok" if worst >= TARGET_RATIO else f"BELOW TARGET {TARGET_RATIO}"
    print(f"worst ratio engine/plain: {worst:.3f} ({verdict}); engine check: {wrong} wrong elements")
    versions = {"torch": torch.__version__}
    if info.backend == "nccl":
        versions["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    print(f"wrote {write_result(args.name, results, versions)}")
    return 0 if wrong == 0 else 1


def driver(args, argv: list[str]) -> int:
    """Start --nproc local ranks of this script in --per-rank mode through `cordee launch`."""
    cordee = Path(sys.executable).with_name("cordee")
    launcher = [str(cordee)] if cordee.exists() else [sys.executable, "-m", "cordee"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC", "MASTER_"))}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(k, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PLATFORM_DIR, os.environ.get("PYTHONPATH")]))
    cmd = [
        *launcher,
        "launch",
        "--profile",
        "none",
        "--nproc-per-node",
        str(args.nproc),
        "--",
        sys.executable,
        __file__,
        "--per-rank",
        *argv,
    ]
    try:
        return subprocess.run(cmd, env=env, timeout=args.timeout * 4 + 60 * args.rounds).returncode
    except subprocess.TimeoutExpired:
        print("bench_collectives_engine: the ranks did not finish in time", file=sys.stderr)
        return 1


def sizes_arg(text: str) -> list[int]:
    from cordee.cli.bench import parse_size

    return [parse_size(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-rank", action="store_true", help="run as one rank of a launched job")
    ap.add_argument("--nproc", type=int, default=2, help="driver mode: local ranks (default 2)")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--dtype", default=None, help="float32, bf16, float16 (default by device)")
    ap.add_argument("--sizes", type=sizes_arg, default=sizes_arg("64K,1M,8M"))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--name", default="collectives_engine", help="results/<name>.json")
    args = ap.parse_args(argv)
    if args.per_rank:
        return per_rank(args)
    return driver(args, [a for a in argv if a != "--per-rank"])


if __name__ == "__main__":
    sys.path.insert(0, PLATFORM_DIR)
    sys.exit(main())
