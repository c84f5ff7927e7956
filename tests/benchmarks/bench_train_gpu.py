"""Trainer throughput on one GPU against a plain compiled loop of the same model, and the cost of
asynchronous checkpoints (issue 11 targets: >= 50% MFU, >= 0.90 of the plain loop, < 5% added
to the average step time by async checkpoints).

Cases, each in its own process, one after the other in one run on one machine:
  plain    the same Transformer (cordee.train.model, the 1b config), no FSDP: fp32 weights,
           bf16 autocast, torch.compile of the whole forward + loss, fused AdamW; the same
           synthetic batches; no host sync inside the timed window (its best case).
  trainer  `python -m cordee train --config 1b` as users run it: FSDP2 in a 1-rank NCCL group,
           bf16 params/compute with fp32 reduction and master weights, each block compiled,
           per-step loss all_reduce and metrics; no checkpoints.
  ckpt     the same with async checkpoints every --ckpt-interval steps to --ckpt-dir (weights +
           AdamW state, 12 bytes per parameter), keep=1.
Time per step: the wall time between the records of step --warmup and the last step divided by
the steps between (checkpoint calls between steps included), after --warmup steps for
compilation. MFU = tokens/s x (6 x params + 12 x layers x width x seq) / peak (cordee.train.
metrics table). Writes tests/benchmarks/results/train_gpu.json (machine, versions, date, commands)
after every case.

    NCCL_NVLS_ENABLE=0 PYTHONPATH=platform python tests/benchmarks/bench_train_gpu.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLATFORM_DIR = str(HERE.parents[1] / "platform")
sys.path.insert(0, PLATFORM_DIR)
sys.path.insert(0, str(HERE))
CASE_TIMEOUT_S = 400


def plain_worker(config: str, steps: int, warmup: int) -> dict:
    """The baseline loop, in this process: prints one JSON line."""
    import torch

    from cordee.train.configload import load_config
    from cordee.train.data import open_source
    from cordee.train.model import Transformer, cross_entropy
    from cordee.train.order import rank_batch

    cfg = load_config(config, [])
    device = torch.device("cuda", 0)
    torch.manual_seed(cfg.seed)
    with device:
        model = Transformer(cfg.model)
    model.init_weights(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)

    def loss_of(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return cross_entropy(model(x), y)

    compiled = torch.compile(loss_of)
    source = open_source(cfg.data, cfg.model.vocab_size)
    batches = [
        rank_batch(source, cfg.data.seed, s, cfg.global_batch, cfg.seq_len, 0, 1) for s in range(steps)
    ]
    t_start = None
    for step, (x, y) in enumerate(batches):
        if step == warmup:
            torch.cuda.synchronize()
            t_start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = compiled(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - t_start) / (steps - warmup)
    return {
        "step_time_s": step_s,
        "final_loss": loss.item(),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30,
    }


def trainer_case(argv: list[str], steps: int, warmup: int, metrics: Path, log) -> dict:
    from common import run_trainer

    t0 = time.monotonic()
    stderr, by_step, timed = run_trainer(argv, metrics, warmup, CASE_TIMEOUT_S, log)
    window = by_step[steps]["time"] - by_step[warmup]["time"]
    return {
        "command": " ".join(argv[1:]),
        "step_time_s": window / (steps - warmup),
        "median_step_time_s": statistics.median(row["step_time_s"] for row in timed),
        "checkpoint_s": sum(row["checkpoint_s"] for row in timed),
        "checkpoints_in_window": sum(1 for row in timed if row["checkpoint_s"] > 0),
        # per save: staging, plus the wait for the previous save's write when it is not done yet
        "checkpoint_block_s": [row["checkpoint_s"] for row in timed if row["checkpoint_s"] > 0],
        "final_loss": by_step[steps]["loss"],
        "peak_mem_gib": by_step[steps]["peak_mem_gib"],
        "setup": next((line for line in stderr.splitlines() if "FSDP2" in line or "DDP" in line), ""),
        "checkpoint_log": [line for line in stderr.splitlines() if "checkpoint" in line][-6:],
        "wall_s": time.monotonic() - t0,
    }


def filesystem_of(path: Path) -> str:
    """'MOUNTPOINT (FSTYPE)' holding `path`: checkpoint cost depends on the storage."""
    best = ("/", "?")
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) >= len(best[0]):
                best = (parts[1], parts[2])
    return f"{best[0]} ({best[1]})"


def plain_case(args) -> dict:
    argv = [sys.executable, __file__, "--worker", "plain", "--config", args.config,
            "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"plain loop exited {r.returncode}: {r.stderr[-500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out | {"command": f"bench_train_gpu.py --worker plain --steps {args.steps}",
                  "wall_s": time.monotonic() - t0}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="1b")
    ap.add_argument("--steps", type=int, default=40, help="steps of the plain loop, warmup included")
    ap.add_argument("--trainer-steps", type=int, default=160, help="steps of each trainer case")
    ap.add_argument("--warmup", type=int, default=10, help="first steps left out (compilation)")
    ap.add_argument("--ckpt-interval", type=int, default=50)
    ap.add_argument("--ckpt-dir", default=None, help="default: a temporary directory")
    ap.add_argument("--cases", default="plain,trainer,ckpt")
    ap.add_argument("--log", default=None, help="append every case's stderr to this file")
    ap.add_argument("--worker", choices=["plain"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "plain":
        print(json.dumps(plain_worker(args.config, args.steps, args.warmup)), flush=True)
        return 0

    import torch
    from common import write_result

    from cordee.train.configload import load_config
    from cordee.train.metrics import mfu, peak_tflops
    from cordee.train.model import flops_per_token, num_params

    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA GPU")
        return 0
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ["PYTHONPATH"] = PLATFORM_DIR + os.pathsep + os.environ.get("PYTHONPATH", "")
    cfg = load_config(args.config, [])
    gpu = torch.cuda.get_device_name(0)
    peak, peak_source = peak_tflops(gpu, None)
    fpt = flops_per_token(cfg.model, cfg.seq_len)
    tokens = cfg.global_batch * cfg.seq_len
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                "nccl": ".".join(map(str, torch.cuda.nccl.version()))}  # fmt: skip

    def log(text: str) -> None:
        if args.log:
            with open(args.log, "a") as f:
                f.write(text + "\n")

    results: dict = {"command": " ".join(["python", "tests/benchmarks/bench_train_gpu.py", *sys.argv[1:]]),
                     "config": args.config, "plain_steps": args.steps, "trainer_steps": args.trainer_steps,
                     "warmup": args.warmup, "gpu": gpu, "params": num_params(cfg.model),
                     "flops_per_token": fpt, "tokens_per_step": tokens, "peak_tflops": peak,
                     "peak_source": peak_source, "cases": {},
                     "targets": {"mfu": 0.50, "trainer_vs_plain": 0.90, "ckpt_overhead": 0.05}}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    ckpt_dir = Path(args.ckpt_dir) if args.ckpt_dir else work / "ckpt"
    for case in args.cases.split(","):
        print(f"case {case} ...", flush=True)
        try:
            if case == "plain":
                out = plain_case(args)
            else:
                (work / case).mkdir()
                metrics = work / case / "metrics.jsonl"
                train = ["--config", args.config, f"steps={args.trainer_steps}", f"metrics_file={metrics}",
                         "log_interval=50"]  # fmt: skip
                if case == "ckpt":  # keep=1: a 1b checkpoint (weights + AdamW) is ~15 GB
                    train += [f"checkpoint.dir={ckpt_dir}", f"checkpoint.interval={args.ckpt_interval}",
                              "checkpoint.keep=1"]  # fmt: skip
                if case not in ("trainer", "ckpt"):
                    raise ValueError(f"unknown case {case!r}")
                argv = [sys.executable, "-m", "cordee", "train", *train]
                try:
                    out = trainer_case(argv, args.trainer_steps, args.warmup, metrics, log)
                finally:
                    shutil.rmtree(ckpt_dir, ignore_errors=True)
                if case == "ckpt":
                    out["ckpt_interval"] = args.ckpt_interval
                    out["ckpt_storage"] = filesystem_of(ckpt_dir)
            out["tokens_per_s"] = tokens / out["step_time_s"]
            out["mfu"] = mfu(out["tokens_per_s"], fpt, peak) if peak else None  # one GPU
        except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError, KeyError) as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        results["cases"][case] = out
        print(json.dumps({case: out}, indent=1), flush=True)
        c = results["cases"]
        if "tokens_per_s" in c.get("plain", {}) and "tokens_per_s" in c.get("trainer", {}):
            results["trainer_vs_plain"] = c["trainer"]["tokens_per_s"] / c["plain"]["tokens_per_s"]
        if "step_time_s" in c.get("ckpt", {}) and "step_time_s" in c.get("trainer", {}):
            results["ckpt_overhead"] = c["ckpt"]["step_time_s"] / c["trainer"]["step_time_s"] - 1.0
        path = write_result("train_gpu", results, versions)  # after every case: a kill keeps the rest
    print(f"wrote {path}")
    print(json.dumps({k: v for k, v in results.items() if k != "cases"}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
