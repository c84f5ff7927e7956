"""`cordee train` under a real multi-node srun, the way a job runs it:

    srun -N2 --ntasks-per-node=1 --kill-on-bad-exit=1 cordee launch -- cordee train --config tiny ...

Two "nodes" (network namespaces with their own hostname and address) form a gloo group; rank 0
writes the metrics file, every rank its part of each DCP checkpoint in a directory both see. A
run stopped by SIGUSR1 (sent to srun, which forwards it to the tasks, as `scancel --signal` or
`sbatch --signal` would) and resumed in a new step must give the uninterrupted run's losses, and
a resume on one node must read the same samples.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

STEPS = 24
STEP_2X1 = ["-N2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
TRAIN = [
    "cordee",
    "launch",
    "--",
    "cordee",
    "train",
    "--config",
    "tiny",
    f"steps={STEPS}",
    "log_interval=1000",
]
TIMEOUT_S = 240


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def srun_train(cluster, step: list[str], *overrides: str):
    return cluster.srun([*step, *TRAIN, *overrides], timeout=TIMEOUT_S)


def start_srun(cluster, overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["srun", *STEP_2X1, *TRAIN, *overrides], env=cluster.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@contextlib.contextmanager
def stopping(p: subprocess.Popen, cluster):
    """On any failure: srun killed and the cluster's jobs cancelled (an orphaned step would run on)."""
    try:
        yield
    except BaseException:
        p.kill()
        p.wait(timeout=10)
        cluster.cancel_all()
        raise


def wait_until(condition, p: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert p.poll() is None, f"srun exited {p.returncode} early: {p.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_stop_resume_and_one_node_resume_across_two_nodes(slurm_cluster, tmp_path):
    ref_metrics = tmp_path / "reference.jsonl"
    r = srun_train(slurm_cluster, STEP_2X1, f"metrics_file={ref_metrics}")
    assert r.returncode == 0, r.stderr
    assert "2 rank(s), gloo, cpu: FSDP2" in r.stderr
    reference = {row["step"]: row for row in records(ref_metrics)}
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert reference[STEPS]["loss"] < 0.8 * reference[1]["loss"]

    metrics, ckpt = tmp_path / "stopped.jsonl", tmp_path / "ckpt"
    args = [f"metrics_file={metrics}", f"checkpoint.dir={ckpt}", "checkpoint.interval=1000"]
    p = start_srun(slurm_cluster, args)
    with stopping(p, slurm_cluster):
        wait_until(lambda: len(records(metrics)) >= 3, p)
        p.send_signal(signal.SIGUSR1)
        _, err = p.communicate(timeout=TIMEOUT_S)
    k = records(metrics)[-1]["step"]
    assert p.returncode == 75, err
    assert 3 <= k < STEPS and (ckpt / "latest").read_text().strip() == f"step-{k:08d}", err
    copy = tmp_path / "ckpt-one-node"
    subprocess.run(["cp", "-a", str(ckpt), str(copy)], check=True, timeout=60)

    before = len(records(metrics))
    r = srun_train(slurm_cluster, STEP_2X1, *args)
    assert r.returncode == 0, r.stderr
    resumed = records(metrics)[before:]
    assert [row["step"] for row in resumed] == list(range(k + 1, STEPS + 1))
    for row in resumed:
        ref = reference[row["step"]]
        assert abs(row["loss"] - ref["loss"]) <= 1e-6 and row["samples_crc"] == ref["samples_crc"]

    one = tmp_path / "one-node.jsonl"
    r = srun_train(slurm_cluster, ["-N1", "-n1"], f"metrics_file={one}", f"checkpoint.dir={copy}")
    assert r.returncode == 0, r.stderr
    rows = records(one)
    assert [row["step"] for row in rows] == list(range(k + 1, STEPS + 1))
    assert all(row["samples_crc"] == reference[row["step"]]["samples_crc"] for row in rows)
    assert all(abs(row["loss"] - reference[row["step"]]["loss"]) < 1e-4 for row in rows)


def test_job_killed_during_an_async_save_restarts_from_the_previous_checkpoint(slurm_cluster, tmp_path):
    """SIGKILL to both ranks (a node lost, the OOM killer) while a save is in flight: async saves
    every 2 steps are committed (renamed, then `latest`) only at the next save."""
    metrics, ckpt = tmp_path / "metrics.jsonl", tmp_path / "ckpt"
    steps = 200  # the kill lands a second or more after the save was seen: the run must go on
    args = [f"steps={steps}", f"metrics_file={metrics}", f"checkpoint.dir={ckpt}", "checkpoint.interval=2"]

    def in_flight() -> bool:
        latest = ckpt / "latest"
        return (
            latest.exists()
            and latest.read_text().strip() >= "step-00000004"
            and any(t.name > ".tmp-" + latest.read_text().strip() for t in ckpt.glob(".tmp-step-*"))
        )

    p = start_srun(slurm_cluster, args)
    with stopping(p, slurm_cluster):
        wait_until(in_flight, p)
        # SIGKILL to every rank at once, from outside Slurm (`scancel --signal=KILL` would be a
        # cancel, SIGTERM first: a clean stop)
        for _node, pid, cmd in slurm_cluster.node_processes():
            if "cordee train" in cmd:
                os.kill(pid, signal.SIGKILL)
        _, err = p.communicate(timeout=TIMEOUT_S)
    assert p.returncode != 0, err
    committed = int((ckpt / "latest").read_text().strip().removeprefix("step-"))
    assert list(ckpt.glob(".tmp-step-*")), f"no save was in flight: {sorted(os.listdir(ckpt))}\n{err}"
    before = len(records(metrics))
    r = srun_train(slurm_cluster, STEP_2X1, *args)
    assert r.returncode == 0, r.stderr
    assert f"(step {committed})" in r.stderr
    assert [row["step"] for row in records(metrics)[before:]] == list(range(committed + 1, steps + 1))
