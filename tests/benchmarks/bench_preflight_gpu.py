"""The preflight's wall time on one GPU node (targets: quick < 5 s, standard < 30 s per node), from
the command line as a user runs it (`cordee preflight --level L`, standalone: it starts one rank per
GPU), with each check's own duration from its JSON. The GEMM and device-copy engines against plain
torch loops are bench_gemm_hbm.py. Without a GPU it prints SKIP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

QUICK_RUNS = 3


def run(level: str, out: Path) -> tuple[float, int, dict]:
    argv = [sys.executable, "-m", "cordee", "preflight", "--level", level, "--quiet", "--json", str(out)]
    t0 = time.perf_counter()
    rc = subprocess.run(argv, stdout=subprocess.DEVNULL, timeout=600).returncode
    return time.perf_counter() - t0, rc, json.loads(out.read_text())


def slowest_checks(doc: dict, n: int = 6) -> list[tuple[str, float]]:
    worst: dict[str, float] = {}
    for r in doc["results"]:
        worst[r["check"]] = max(worst.get(r["check"], 0.0), r.get("duration_s") or 0.0)
    return sorted(worst.items(), key=lambda kv: -kv[1])[:n]


def main() -> int:
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError
        gpu = torch.cuda.get_device_name(0)
        versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu}
    except ImportError:
        print("SKIP: no CUDA GPU here")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        quick = [run("quick", Path(tmp, f"q{i}.json")) for i in range(QUICK_RUNS)]
        standard = run("standard", Path(tmp, "s.json"))
    results = {
        "node": os.uname().nodename,
        "gpus": torch.cuda.device_count(),
        "system": standard[2]["system"],
        "quick_s": [round(q[0], 3) for q in quick],
        "quick_exit": [q[1] for q in quick],
        "standard_s": round(standard[0], 3),
        "standard_exit": standard[1],
        "standard_counts": standard[2].get("counts"),
        "standard_slowest_checks": slowest_checks(standard[2]),
        "standard_values": {
            r["check"]: [r["value"], r["unit"], r["status"]]
            for r in standard[2]["results"]
            if r["check"] in ("compute.gemm", "memory.copy", "gpu.temperature", "gpu.memory_idle")
        },
        "targets": {"quick_s": 5.0, "standard_s": 30.0},
    }
    rows = [("quick", f"{min(results['quick_s']):.2f}-{max(results['quick_s']):.2f}", "< 5", quick[-1][1])]
    rows.append(("standard", f"{standard[0]:.2f}", "< 30", standard[1]))
    print_table("cordee preflight wall time on one node", rows, ("level", "seconds", "target", "exit"))
    print(f"wrote {write_result('preflight_gpu', results, versions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
