"""Chained jobs of `cordee job render` through the real sbatch on the Slurm test cluster.

A stand-in for the trainer (the chain logic does not depend on what runs) uses cordee's
StopRequest: the first job is signalled as Slurm's `--signal` would signal it (`scancel
--signal=USR1`, which reaches the step's tasks and not the batch shell), "checkpoints" and exits
75; its successor, queued with --dependency=singleton, resumes and finishes, and the chain ends.
A program that always fails stops the chain after --max-failures jobs. The cluster has no
accounting storage: jobs are followed with squeue and their output files.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

CORDEE = str(Path(sys.executable).with_name("cordee"))

STAND_IN = textwrap.dedent("""
    import os, signal, sys, time
    from cordee.train.signals import EXIT_STOPPED, StopRequest
    state, mode = sys.argv[1], sys.argv[2]
    job, rank = os.environ["SLURM_JOB_ID"], os.environ["RANK"]  # RANK from cordee launch
    if mode == "fail":
        sys.exit(3)
    # SIGTERM too, as the trainer's default: srun --kill-on-bad-exit=1 sends it to the tasks still
    # running when the first one exits 75, and they must still exit 75, not die of it (143)
    stop = StopRequest().install(["SIGUSR1", "SIGTERM"])
    step = int(open(state).read()) if os.path.exists(state) else 0
    open(f"{state}.ready.{job}.{rank}", "w").close()
    if step >= 1:  # resumed: the rest of the training fits in this job
        print(f"rank {rank}: resumed at step {step}, finished", flush=True)
        sys.exit(0)
    deadline = time.monotonic() + 60
    while not stop.requested and time.monotonic() < deadline:
        time.sleep(0.05)  # training steps
    if not stop.requested:
        sys.exit(4)
    if rank == "0":  # the "checkpoint", written before the exit code promises it
        with open(state + ".tmp", "w") as f:
            f.write("1")
        os.replace(state + ".tmp", state)
    print(f"rank {rank}: {stop.signal_name} at step {step}, checkpointed", flush=True)
    # as the trainer does (train/loop.py): Python's finalization puts SIGTERM back to its default,
    # so srun's SIGTERM in that window would still kill with 143; SIG_IGN survives finalization
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(EXIT_STOPPED)
""")


class Chain:
    """One chain's script, submission and observation (squeue, output files) in `tmp_path`."""

    def __init__(self, cluster, tmp_path: Path, name: str) -> None:
        self.cluster, self.dir, self.name = cluster, tmp_path, name
        self.state = tmp_path / "state"  # the stand-in's "checkpoint"

    def render(self, mode: str, *, max_failures: int = 3, chain: str = "singleton") -> Path:
        program = self.dir / "stand_in.py"
        program.write_text(STAND_IN)
        script = self.dir / f"{self.name}.sh"
        r = subprocess.run(
            [CORDEE, "job", "render", "--name", self.name, "--nodes", "2", "--ntasks-per-node", "1",
             "--time", "00:05:00", "--signal", "SIGUSR1", "--signal-before", "60",
             "--command", f"{sys.executable} {program} {self.state} {mode}",
             "--max-failures", str(max_failures), "--chain", chain, "--output", "%x-%j.out",
             "--out", str(script)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return script

    def submit(self, script: Path) -> str:
        r = subprocess.run(
            ["sbatch", "--parsable", str(script)],
            env=self.cluster.env, cwd=self.dir, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split(";")[0]

    def jobs(self) -> dict[str, str]:
        """Job id -> state of this chain's jobs that squeue still lists."""
        out = self.cluster.run(["squeue", "-h", "-n", self.name, "-o", "%i %T"]).stdout
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def outputs(self) -> dict[int, str]:
        return {int(p.stem.rsplit("-", 1)[1]): p.read_text() for p in self.dir.glob(f"{self.name}-*.out")}

    def failures(self) -> str:
        return (self.dir / ".cordee-job" / f"{self.name}.failures").read_text()

    def started(self, job: str) -> bool:
        return all(Path(f"{self.state}.ready.{job}.{rank}").exists() for rank in (0, 1))

    def ended(self, count: int) -> bool:
        """`count` jobs have logged their verdict (their last line) and none is left."""
        verdicts = ("the chain continues", "the chain ends", "the chain stops")
        done = [text for text in self.outputs().values() if any(v in text for v in verdicts)]
        return len(done) >= count and not self.jobs()

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        left = self.jobs()
        self.cluster.cancel_all()
        pytest.fail(f"{what}: not after {timeout:.0f} s; squeue: {left}; outputs: {self.outputs()}")


def test_signalled_job_checkpoints_and_its_successor_finishes_the_chain(slurm_cluster, tmp_path):
    c = Chain(slurm_cluster, tmp_path, "cordee-chain-ok")
    first = c.submit(c.render("train"))
    c.wait(lambda: c.started(first), 40, "the first job's tasks")
    successor = [j for j in c.jobs() if j != first]
    assert len(successor) == 1 and c.jobs()[successor[0]] == "PENDING"
    r = slurm_cluster.run(["scancel", "--signal=USR1", first])
    assert r.returncode == 0, r.stderr
    c.wait(lambda: c.ended(2), 60, "the chain's end")

    runs = c.outputs()
    assert sorted(runs) == [int(first), int(successor[0])], runs  # the third link was cancelled
    one, two = runs[int(first)], runs[int(successor[0])]
    assert "rank 0: SIGUSR1 at step 0, checkpointed" in one and "rank 1: SIGUSR1" in one
    assert "stopped after a complete checkpoint: the chain continues" in one
    assert "link 2 of the chain" in two and "resumed at step 1, finished" in two
    assert "training finished: the chain ends" in two and "cancelled" in two
    assert c.state.read_text() == "1" and c.failures() == "0\n"


def test_repeated_failures_stop_the_chain(slurm_cluster, tmp_path):
    c = Chain(slurm_cluster, tmp_path, "cordee-chain-fail")
    c.submit(c.render("fail", max_failures=2))
    c.wait(lambda: c.ended(2), 60, "the chain's end")
    runs = [text for _, text in sorted(c.outputs().items())]
    assert len(runs) == 2, runs
    # srun's exit code: the largest of the tasks' (3, or 143 for a task that --kill-on-bad-exit ended)
    assert re.search(r"failed \(exit (3|143)\), 1 of 2 in a row: the chain continues", runs[0]), runs[0]
    assert re.search(r"failed \(exit (3|143)\), 2 times in a row: the chain stops", runs[1]), runs[1]
    assert "cancelled" in runs[1] and c.failures() == "2\n"


def test_requeue_mode_requeues_the_stopped_job_which_then_finishes(slurm_cluster, tmp_path):
    c = Chain(slurm_cluster, tmp_path, "cordee-chain-requeue")
    job = c.submit(c.render("train", chain="requeue"))
    c.wait(lambda: c.started(job), 40, "the job's tasks")
    assert slurm_cluster.run(["scancel", "--signal=USR1", job]).returncode == 0
    log = lambda: c.outputs().get(int(job), "")  # noqa: E731
    c.wait(lambda: "requeued" in log() and c.jobs().get(job) == "PENDING", 40, "the requeue")
    # Slurm holds a requeued job back for a while (BeginTime, 2 minutes); start it now
    r = slurm_cluster.run(["scontrol", "update", f"JobId={job}", "StartTime=now"])
    assert r.returncode == 0, r.stderr
    c.wait(lambda: "the chain ends" in log() and not c.jobs(), 40, "the chain's end")
    text = log()  # --open-mode=append: both runs in one file
    assert "run 1 of the chain" in text and "stopped after a complete checkpoint" in text
    assert "run 2 of the chain" in text and "resumed at step 1, finished" in text
    assert c.state.read_text() == "1" and c.failures() == "0\n"
