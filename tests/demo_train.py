"""`make demo`, the training part: a chained `cordee train` run through the real sbatch on the
Slurm test cluster, stopped by its time limit and resumed by its successor.

`cordee job render` writes the script (2 nodes, 1 task each, a 2-minute limit, SIGUSR1 60 s before
it, --dependency=singleton chain); the first job trains the tiny model on synthetic data until
Slurm signals it, saves a checkpoint and exits 75; its successor resumes from that checkpoint and
finishes. Slurm checks time limits about every 30 s and may signal up to a minute early, so the
stop comes somewhere in the first job's first minute. Prints each job's outcome and the metrics
(loss falling across the resume). Used by tests/demo.py.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 1500  # on the 2-core CI VM: a few minutes of tiny-model steps, longer than one job's first minute
TIME_LIMIT = "00:02:00"


def _render(tmp: Path) -> tuple[Path, list[str]]:
    cordee = str(Path(sys.executable).with_name("cordee"))
    args = [
        "job", "render", "--name", "cordee-demo-train", "--nodes", "2", "--ntasks-per-node", "1",
        "--time", TIME_LIMIT, "--signal", "SIGUSR1", "--signal-before", "60", "--config", "tiny",
        "--set", f"steps={STEPS}", "--set", f"checkpoint.dir={tmp / 'ckpt'}",
        "--set", "checkpoint.interval=200",
        "--set", f"metrics_file={tmp / 'metrics.jsonl'}", "--set", "log_interval=100",
        "--state-dir", str(tmp / "state"), "--output", str(tmp / "job-%j.out"), "--out", str(tmp / "job.sh"),
    ]  # fmt: skip
    subprocess.run([cordee, *args], check=True, timeout=60)
    return tmp / "job.sh", args


def _jobs(cluster) -> dict[str, str]:
    out = cluster.run(["squeue", "-h", "-n", "cordee-demo-train", "-o", "%i %T"]).stdout
    return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)


def _metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def train_step(cluster, timeout_s: float = 900) -> list[str]:
    """Problems found (empty: the chain was stopped by the time limit, resumed and finished)."""
    with tempfile.TemporaryDirectory(prefix="cordee-demo-train-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        script, args = _render(tmp)
        print(f"\n== cordee {shlex.join(args[:12])} ... --out job.sh; sbatch job.sh", flush=True)
        first = cluster.run(["sbatch", "--parsable", str(script)]).stdout.strip()
        print(f"-- job {first} submitted (limit {TIME_LIMIT}, SIGUSR1 60 s before it); waiting for the chain")
        t0, seen = time.monotonic(), set()
        while time.monotonic() - t0 < timeout_s:
            jobs = _jobs(cluster)
            for job in sorted(set(jobs) - seen):
                print(f"-- {time.monotonic() - t0:5.0f}s  job {job}: {jobs[job].lower()}", flush=True)
                seen.add(job)
            if not jobs and seen:
                break
            time.sleep(1.0)
        else:
            cluster.cancel_all()
            return [f"the chain did not finish within {timeout_s:.0f} s"]
        for out in sorted(tmp.glob("job-*.out")):
            lines = [ln for ln in out.read_text(errors="replace").splitlines() if "cordee" in ln]
            print(f"\n-- {out.name} (cordee lines, last 4):\n" + "\n".join(lines[-4:]))
        records = _metrics(tmp / "metrics.jsonl")
        return _report(records, len(seen))


def _report(records: list[dict], jobs: int) -> list[str]:
    from cordee.train.metrics import format_step

    by_step = {r["step"]: r for r in records}
    print(f"\n== metrics ({len(records)} steps logged over {jobs} jobs; every 150th shown)")
    for step in sorted(by_step):
        if step == 1 or step % 150 == 0 or step == max(by_step):
            print(format_step(by_step[step]))
    problems = []
    if jobs < 2:
        problems.append(
            f"expected the time limit to stop the first job and a successor to resume: {jobs} job(s)"
        )
    if max(by_step, default=0) != STEPS:
        problems.append(f"the chain ended at step {max(by_step, default=0)}, not {STEPS}")
    elif by_step[STEPS]["loss"] >= by_step[min(by_step)]["loss"] * 0.5:
        problems.append("the loss did not fall by half over the run")
    return problems
