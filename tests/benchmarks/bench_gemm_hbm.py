"""The compute engines (cordee.bench.gemm, cordee.bench.hbm) against plain torch loops, on one GPU,
in the same process and run: bf16 GEMM 8192^3 TFLOP/s vs a `torch.matmul` loop, and the 1 GiB
device copy GB/s (read + write) vs a plain `dst.copy_(src)` loop timed with synchronize.

Target: each engine within 5% of its plain loop (ratio engine/plain >= 0.95). The two sides
alternate for --rounds rounds (which one first alternating), each side's figure is the median.
Without a GPU it prints SKIP (pass --device cpu to compare the CPU variants instead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

PLATFORM_DIR = str(Path(__file__).resolve().parents[2] / "platform")
TARGET_RATIO = 0.95


def alternate(engine, plain, rounds: int, key: str) -> dict:
    values = {"engine": [], "plain": []}
    for rnd in range(rounds):
        for side in ("engine", "plain") if rnd % 2 == 0 else ("plain", "engine"):
            values[side].append((engine if side == "engine" else plain)()[key])
    e, p = statistics.median(values["engine"]), statistics.median(values["plain"])
    return {
        "engine": e,
        "plain": p,
        "ratio": e / p,
        "engine_rounds": values["engine"],
        "plain_rounds": values["plain"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--n", type=int, default=None, help="matrix order (default 8192 GPU, 1024 CPU)")
    ap.add_argument("--bytes", type=int, default=None, help="copy size (default 1 GiB GPU, 64 MiB CPU)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)

    import torch

    from cordee.bench import gemm, hbm
    from cordee.bench.group import resolve_device

    device = resolve_device(args.device)
    if device == "cpu" and args.device == "auto":
        print("SKIP bench_gemm_hbm: torch sees no CUDA GPU (pass --device cpu for the CPU variants)")
        return 0
    k = {"iters": args.iters, "warmup": args.warmup}
    mm = alternate(
        lambda: gemm.gemm(device, n=args.n, **k),
        lambda: gemm.torch_matmul_reference(device, n=args.n, **k),
        args.rounds,
        "tflops",
    )
    copy = alternate(
        lambda: hbm.copy_bandwidth(device, nbytes=args.bytes, **k),
        lambda: hbm.torch_copy_reference(device, nbytes=args.bytes, **k),
        args.rounds,
        "gbps",
    )
    one_gemm = gemm.gemm(device, n=args.n, iters=1, warmup=0)
    one_copy = hbm.copy_bandwidth(device, nbytes=args.bytes, iters=1, warmup=0)
    worst = min(mm["ratio"], copy["ratio"])
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    results = {
        "device": device,
        "gpu": gpu,
        "gemm": {"n": one_gemm["n"], "dtype": one_gemm["dtype"], "unit": "TFLOP/s", **mm},
        "copy": {"bytes": one_copy["bytes"], "unit": "GB/s, read + write", **copy},
        "iters": args.iters,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "target_ratio": TARGET_RATIO,
        "worst_ratio": worst,
        "within_target": worst >= TARGET_RATIO,
    }
    rows = [
        (
            f"gemm {one_gemm['n']}^3 {one_gemm['dtype']}",
            f"{mm['engine']:.1f}",
            f"{mm['plain']:.1f}",
            f"{mm['ratio']:.3f}",
        ),
        (
            f"copy {one_copy['bytes']} B",
            f"{copy['engine']:.0f}",
            f"{copy['plain']:.0f}",
            f"{copy['ratio']:.3f}",
        ),
    ]
    print_table(f"engines vs plain torch loops on {gpu}", rows, ("what", "engine", "plain", "ratio"))
    print(f"worst ratio: {worst:.3f} ({'ok' if worst >= TARGET_RATIO else f'BELOW TARGET {TARGET_RATIO}'})")
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
    print(f"wrote {write_result('gemm_hbm', results, versions)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, PLATFORM_DIR)
    from common import print_table, write_result

    sys.exit(main())
