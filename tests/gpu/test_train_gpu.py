"""`cordee train` on a real GPU: FSDP2 in a 1-rank NCCL group with bf16 mixed precision (bf16
params and compute, fp32 reduction and master weights), a SIGUSR1 stop with a checkpoint, and a
resume (with activation checkpointing on: checkpoints do not depend on the block wrappers).

The 125m shape at a short sequence (seconds per run, no compile: `bench_train_gpu.py` measures
the compiled 1b). Runs on the lent GPU node; skipped where torch sees no CUDA GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cordee

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU (runs on the GPU node)"),
]
PLATFORM_DIR = str(Path(cordee.__file__).resolve().parents[1])
CORDEE = [sys.executable, "-m", "cordee"]  # works where the console script is not on PATH
STEPS = 60
SHAPE = ["seq_len=256", "global_batch=16", "micro_batch=8", f"steps={STEPS}", "warmup_steps=5", "lr=1e-3",
         "compile=false", "log_interval=10", "device=cuda"]  # fmt: skip
TIMEOUT_S = 300


def env() -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    return {**clean, "PYTHONPATH": PLATFORM_DIR, "NCCL_NVLS_ENABLE": "0"}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_fsdp2_bf16_run_lowers_the_loss_stops_on_a_signal_and_resumes(tmp_path):
    metrics, ckpt = tmp_path / "metrics.jsonl", tmp_path / "ckpt"
    argv = [*CORDEE, "train", "--config", "125m", *SHAPE, f"metrics_file={metrics}", f"checkpoint.dir={ckpt}"]
    with open(tmp_path / "first.err", "w") as err:
        p = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + TIMEOUT_S
    while len(records(metrics)) < 10 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGUSR1)
    rc = p.wait(timeout=TIMEOUT_S)
    first_err = (tmp_path / "first.err").read_text()
    assert rc == 75, first_err
    assert "FSDP2 (bf16 params and compute, fp32 reduce and master weights)" in first_err
    first = records(metrics)
    k = first[-1]["step"]
    assert 10 <= k < STEPS and first[-1]["stop_signal"] == "SIGUSR1"
    assert all(r["mfu"] is not None and r["peak_mem_gib"] > 0 and r["device"] == "cuda" for r in first)

    r = subprocess.run(
        [*argv, "activation_checkpointing=true"], env=env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert r.returncode == 0, r.stderr
    assert f"(step {k})" in r.stderr and "activation checkpointing per block" in r.stderr
    resumed = records(metrics)[len(first) :]
    assert [row["step"] for row in resumed] == list(range(k + 1, STEPS + 1))
    initial = first[0]["loss"]
    # the resumed weights are the trained ones: no jump back towards the initial loss
    assert resumed[0]["loss"] < first[-1]["loss"] + 0.5 < initial
    assert resumed[-1]["loss"] < 0.4 * initial, (initial, resumed[-1]["loss"])
    assert (ckpt / "latest").read_text().strip() == f"step-{STEPS:08d}"
