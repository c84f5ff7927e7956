"""`cordee train` end to end on CPU, as a user runs it: real ranks started by `cordee launch
--nproc-per-node 2`, a real gloo process group, FSDP2, DCP checkpoints on disk, real signals.

The tiny config on the synthetic (learnable) data. An uninterrupted 2-rank run is the reference;
a run stopped by SIGUSR1 and resumed must give bit-identical losses for the steps after the stop
(same world size), a resume on 1 rank must read the same samples (`samples_crc` of each step in
the metrics file, a CRC over every row's tokens in global order), and a run killed with SIGKILL
while an asynchronous save is in flight must restart from the previous complete checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launchvars import clean_env as launch_free

from cordee.train.config import learning_rate
from cordee.train.configload import load_config

CORDEE = str(Path(sys.executable).with_name("cordee"))
STEPS = 40
BASE = ["--config", "tiny", f"steps={STEPS}", "log_interval=1000"]
RUN_TIMEOUT_S = 240


def clean_env(**extra: str) -> dict[str, str]:
    return launch_free(names=("OMP_NUM_THREADS",), **extra)


def train_argv(nproc: int, *overrides: str) -> list[str]:
    train = [CORDEE, "train", *BASE, *overrides]
    if nproc == 1:
        return train
    return [CORDEE, "launch", "--profile", "none", "--nproc-per-node", str(nproc), "--", *train]


def run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env or clean_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_step(rows: list[dict]) -> dict[int, dict]:
    return {r["step"]: r for r in rows}


def start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv, env=clean_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, dict]:
    """An uninterrupted 2-rank run: its step records."""
    metrics = tmp_path_factory.mktemp("reference") / "metrics.jsonl"
    r = run(train_argv(2, f"metrics_file={metrics}"))
    assert r.returncode == 0, r.stderr
    rows = records(metrics)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    return by_step(rows)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> dict:
    """A 2-rank run stopped by SIGUSR1 (sent to `cordee launch`, which forwards it) after step 3
    has been logged; a copy of its checkpoint directory is kept for the 1-rank resume."""
    d = tmp_path_factory.mktemp("stopped")
    metrics, ckpt = d / "metrics.jsonl", d / "ckpt"
    argv = train_argv(2, f"metrics_file={metrics}", f"checkpoint.dir={ckpt}", "checkpoint.interval=1000")
    p = start(argv, d / "stderr")
    wait_until(lambda: len(records(metrics)) >= 3, p, "step 3")
    os.kill(p.pid, signal.SIGUSR1)
    rc = p.wait(timeout=RUN_TIMEOUT_S)
    stderr = (d / "stderr").read_text()
    assert rc == 75, stderr
    last = records(metrics)[-1]
    assert 3 <= last["step"] < STEPS, f"stopped after step {last['step']}"
    assert last["stop_signal"] == "SIGUSR1"
    assert f"stopped by SIGUSR1 after step {last['step']}; exit 75" in stderr
    assert (ckpt / "latest").read_text().strip() == f"step-{last['step']:08d}"
    shutil.copytree(ckpt, d / "ckpt-copy")
    return {"dir": d, "argv": argv, "metrics": metrics, "ckpt": ckpt, "step": last["step"]}


def test_loss_falls_and_every_step_is_measured(reference):
    cfg = load_config("tiny", [f"steps={STEPS}"])
    first, last = reference[1], reference[STEPS]
    assert abs(first["loss"] - math.log(cfg.model.vocab_size)) < 0.6  # random weights: chance level
    assert last["loss"] < 0.6 * first["loss"], (first["loss"], last["loss"])
    for step, r in reference.items():
        assert r["lr"] == pytest.approx(learning_rate(cfg, step), rel=1e-12)
        assert r["tokens"] == cfg.global_batch * cfg.seq_len and r["world_size"] == 2
        assert r["tokens_per_s"] > 0 and r["step_time_s"] > 0 and math.isfinite(r["grad_norm"])
        assert r["slowest_rank"] in (0, 1) and r["slowest_ratio"] >= 1.0 and r["max_step_time_s"] > 0
    # a different sample set every step
    assert len({r["samples_crc"] for r in reference.values()}) == STEPS


def test_stop_by_signal_then_resume_gives_the_uninterrupted_losses(stopped, reference):
    k = stopped["step"]
    before = len(records(stopped["metrics"]))
    r = run(stopped["argv"])
    assert r.returncode == 0, r.stderr
    assert f"resumed from checkpoint {stopped['ckpt'] / f'step-{k:08d}'} (step {k})" in r.stderr
    resumed = records(stopped["metrics"])[before:]
    assert [row["step"] for row in resumed] == list(range(k + 1, STEPS + 1))
    for row in resumed:
        ref = reference[row["step"]]
        assert abs(row["loss"] - ref["loss"]) <= 1e-6, (row["step"], row["loss"], ref["loss"])
        assert row["samples_crc"] == ref["samples_crc"]
    assert (stopped["ckpt"] / "latest").read_text().strip() == f"step-{STEPS:08d}"


def test_resume_on_one_rank_reads_the_same_samples(stopped, reference):
    k, metrics = stopped["step"], stopped["dir"] / "one-rank.jsonl"
    r = run(
        train_argv(1, f"metrics_file={metrics}", f"checkpoint.dir={stopped['dir'] / 'ckpt-copy'}", "--json")
    )
    assert r.returncode == 0, r.stderr
    assert "1 rank(s), gloo, cpu" in r.stderr and f"(step {k})" in r.stderr
    summary = json.loads(r.stdout)
    assert summary["schema"] == "cordee.train/1" and summary["exit_code"] == 0
    assert (summary["first_step"], summary["last_step"]) == (k + 1, STEPS)
    rows = records(metrics)
    assert [row["step"] for row in rows] == list(range(k + 1, STEPS + 1))
    for row in rows:
        ref = reference[row["step"]]
        assert row["world_size"] == 1 and row["samples_crc"] == ref["samples_crc"]
        # the same samples and weights; only the order of float additions differs
        assert row["loss"] == pytest.approx(ref["loss"], abs=1e-4)


def test_sigkill_while_a_save_is_in_flight_restarts_from_the_previous_checkpoint(tmp_path, reference):
    """Async saves every 2 steps: a save is written to .tmp-step-N and committed (renamed, then
    `latest`) only at the next save, so at almost any moment one is in flight. SIGKILL to `cordee
    launch` kills both ranks at once (they die with their parent)."""
    metrics, ckpt = tmp_path / "metrics.jsonl", tmp_path / "ckpt"
    argv = train_argv(2, f"metrics_file={metrics}", f"checkpoint.dir={ckpt}", "checkpoint.interval=2")
    p = start(argv, tmp_path / "stderr")

    def in_flight() -> list[Path]:
        latest = ckpt / "latest"
        if not latest.exists():
            return []
        committed = int(latest.read_text().strip().removeprefix("step-"))
        tmps = [t for t in ckpt.glob(".tmp-step-*") if int(t.name.removeprefix(".tmp-step-")) > committed]
        return tmps if committed >= 4 else []

    wait_until(lambda: bool(in_flight()), p, "a save in flight after step 4")
    os.kill(p.pid, signal.SIGKILL)
    assert p.wait(timeout=60) == -signal.SIGKILL
    interrupted = in_flight()
    assert interrupted, "the save had been committed before the kill landed"
    committed = int((ckpt / "latest").read_text().strip().removeprefix("step-"))
    before = len(records(metrics))

    r = run(argv)
    assert r.returncode == 0, r.stderr
    assert f"resumed from checkpoint {ckpt / f'step-{committed:08d}'} (step {committed})" in r.stderr
    resumed = records(metrics)[before:]
    assert [row["step"] for row in resumed] == list(range(committed + 1, STEPS + 1))
    for row in resumed:
        assert abs(row["loss"] - reference[row["step"]]["loss"]) <= 1e-6
    assert not any(t.exists() for t in interrupted)  # the abandoned save was cleaned up


def write_bad_shard(path: Path) -> Path:
    path.write_bytes(b"NOTASHRD" + bytes(56) + bytes(200))
    return path


@pytest.mark.parametrize(
    ("overrides", "env", "expected"),
    [
        (["model.nlayers=4"], {}, "unknown key 'model.nlayers' (did you mean 'model.n_layers'?"),
        (["model.n_heads=3"], {}, "model.n_heads: 3 does not divide model.dim 64"),
        (["seq_len=128"], {}, "seq_len: 128 is longer than model.max_seq_len 64"),
        ([], {"RANK": "0", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
         "global_batch: 8 is not a multiple of micro_batch 4 x world size 3"),
        (["data.path={tmp}/missing"], {}, "missing': no such file or directory"),
        (["data.path={tmp}/bad.tok"], {}, "bad.tok': not a cordee token shard (magic b'NOTASHRD'"),
    ],
    ids=["unknown-key", "heads", "seq-len", "world-size", "missing-data", "bad-shard"],
)  # fmt: skip
def test_bad_config_is_one_line_and_exit_2(tmp_path, overrides, env, expected):
    write_bad_shard(tmp_path / "bad.tok")
    argv = [CORDEE, "train", "--config", "tiny", "--dry-run", *(o.format(tmp=tmp_path) for o in overrides)]
    r = run(argv, env=clean_env(**env))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("cordee: error: "), r.stderr
    assert expected in r.stderr
    assert r.stdout == ""


def test_bad_shard_stops_a_real_run_before_it_starts(tmp_path):
    shard = write_bad_shard(tmp_path / "bad.tok")
    r = run(train_argv(1, f"data.path={shard}", f"checkpoint.dir={tmp_path / 'ckpt'}"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "not a cordee token shard" in r.stderr
    assert not (tmp_path / "ckpt").exists()


def test_dry_run_and_help_do_not_import_torch():
    code = (
        "import sys\nfrom cordee.cli import main\n"
        "for argv in (['train', '--config', 'tiny', '--dry-run', 'steps=7'], ['train', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        "sys.stderr.write('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    r = run([sys.executable, "-c", code])
    assert r.returncode == 0 and r.stderr == "no torch", r.stderr
    doc = json.JSONDecoder().raw_decode(r.stdout)[0]
    assert doc["schema"] == "cordee.train.config/1" and doc["config"]["steps"] == 7
    assert doc["world_size"] == 1 and doc["grad_accum"] == 2
    from cordee.train.config import key_docs

    for key, kind, _default, _doc in key_docs():  # every key, its type, in --help
        assert f"  {key} " in r.stdout and kind in r.stdout


def child_with_rank(parent: int, rank: int) -> int | None:
    """The pid of `parent`'s child whose environment says RANK=rank."""
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0") if ppid == parent else []
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_a_killed_rank_ends_the_run_and_the_survivor_names_itself_and_its_node(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    p = start(train_argv(2, "steps=1000", f"metrics_file={metrics}"), tmp_path / "stderr")
    wait_until(lambda: len(records(metrics)) >= 3, p, "step 3")
    victim = child_with_rank(p.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    rc = p.wait(timeout=RUN_TIMEOUT_S)
    stderr = (tmp_path / "stderr").read_text()
    assert rc == 128 + signal.SIGKILL, stderr  # `cordee launch` gives the failed rank's code
    errors = [line for line in stderr.splitlines() if line.startswith("cordee: error:")]
    assert len(errors) == 1 and f"rank 0 on node {os.uname().nodename} failed at step" in errors[0], stderr
    assert len(records(metrics)) < 1000
