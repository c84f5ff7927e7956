"""How reliably the Slurm preflight comes out right, case by case, over repeated runs on a real
4-node test cluster (tests/slurmtest; gloo on CPU ranks, system cpu-ci).

Cases (the same functions as tests/test_preflight_slurm.py, which runs each once):
  healthy      srun -N4 --ntasks-per-node=2: exit 0, nobody accused
  slowed_link  tc tbf 100mbit on one node's veth (the node changes each run): exactly that node
               in the exclude hostlist
  straggler    one rank stopped 90 ms of every 100 (the rank changes each run): named, with its ratio
  kill, stop   SIGKILL / SIGSTOP of one rank while every rank loops on all_reduce (the rank
               changes each run, never rank 0, the collector): exit 3 within the stall timeout
               (5 s) + 10 s, the error naming the rank and its node
A run counts as right when every assertion of its case holds. Needs root (namespaces, tc).

    python tests/benchmarks/bench_preflight_faults.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import test_preflight_slurm as cases  # noqa: E402
from common import print_table, write_result  # noqa: E402
from slurmtest import SlurmCluster, unavailable_reason  # noqa: E402


def plan(repeat: int) -> list[tuple[str, object]]:
    """(case name, function of (cluster, tmp)) in a round-robin order: drift in the machine's load
    touches every case alike."""
    runs = []
    for i in range(repeat):
        runs.append(("healthy", cases.case_healthy))
        runs.append(("slowed_link", lambda c, t, i=i: cases.case_slowed_link(c, t, slow_index=i % 4)))
        runs.append(("straggler", lambda c, t, i=i: cases.case_straggler(c, t, victim_rank=i % 4)))
        runs.append(("kill", lambda c, t, i=i: cases.case_signal_mid_collective(c, t, "SIGKILL", 1 + i % 7)))
        runs.append(
            ("stop", lambda c, t, i=i: cases.case_signal_mid_collective(c, t, "SIGSTOP", 1 + (i + 3) % 7))
        )
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each case (kill and stop: each)")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return
    outcomes: dict[str, list[dict]] = {}
    with SlurmCluster(nodes=4, cpus_per_node=4) as cluster:
        for name, case in plan(args.repeat):
            started = time.monotonic()
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    figures, ok, why = case(cluster, Path(tmp)), True, ""
                except Exception as e:  # noqa: BLE001 - a wrong outcome is a data point, recorded
                    figures, ok = {}, False
                    why = traceback.format_exception_only(e)[-1].strip().splitlines()[0][:300]
            took = time.monotonic() - started
            figures = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
            outcomes.setdefault(name, []).append({"ok": ok, "case_s": round(took, 2), **figures, "why": why})
            print(f"{name:12} {'right' if ok else 'WRONG'} {took:6.1f} s {why}", flush=True)
    summary = {}
    for name, runs in outcomes.items():
        seconds = [r["case_s"] for r in runs]
        summary[name] = {
            "right": sum(r["ok"] for r in runs),
            "runs": len(runs),
            "case_s_median": round(statistics.median(seconds), 2),
            "case_s_max": max(seconds),
        }
        after = [r["seconds_after_signal"] for r in runs if "seconds_after_signal" in r]
        if after:
            summary[name]["exit_after_signal_s_max"] = round(max(after), 2)
        ratios = [r["ratio"] for r in runs if "ratio" in r]
        if ratios:
            summary[name]["straggler_ratio_min"] = round(min(ratios), 2)
    print_table(
        "preflight fault cases on the 4-node test cluster",
        [(n, f"{s['right']}/{s['runs']}", s["case_s_median"], s["case_s_max"]) for n, s in summary.items()],
        ("case", "right", "median s (whole case)", "max s"),
    )
    path = write_result("preflight_faults", {"summary": summary, "runs": outcomes, "repeat": args.repeat})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
