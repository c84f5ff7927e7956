"""Fine-tuning as a job runs it, on the local Slurm test cluster: a tiny Llama with tied
embeddings, built and saved by `transformers`; a small chat set prepared by `cordee data prepare
--chat` with that model's tokenizer and chat template; then

    srun -N2 --ntasks-per-node=1 cordee launch -- cordee train --config finetune-llama \\
        model.from_hf=DIR data.path=CHAT (small shape overrides) checkpoint.dir=...

stopped by SIGUSR1 (exit 75 after a checkpoint), resumed to the end in a new step, and exported
with `cordee export`, which `transformers` loads: its logits equal those of cordee's model with
the checkpoint's weights. The masked loss falls over the run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launchvars import clean_env

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import hftiny  # noqa: E402
from hftiny import cordee_model  # noqa: E402

pytestmark = pytest.mark.slurm

CORDEE = str(Path(sys.executable).with_name("cordee"))
STEPS = 16
SHAPE = ["seq_len=64", "global_batch=8", "micro_batch=4", f"steps={STEPS}", "warmup_steps=2", "lr=1e-2",
         "min_lr=1e-3", "precision=fp32", "compile=false", "activation_checkpointing=false", "device=cpu",
         "log_interval=1000", "checkpoint.interval=1000"]  # fmt: skip
TIMEOUT_S = 120


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def local(*argv: str) -> subprocess.CompletedProcess:
    r = subprocess.run([CORDEE, *argv], env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    return r


def test_fine_tuning_on_two_nodes_stops_resumes_and_exports(slurm_cluster, tmp_path):
    model_dir = hftiny.model_dir(tmp_path / "hf", "llama", seed=5, tied=True)
    chat = tmp_path / "chat"
    local("data", "prepare", "--chat", "--model-dir", str(model_dir), "--seq-len", "64", "-o", str(chat),
          "--quiet", str(hftiny.chat_jsonl(tmp_path / "chat.jsonl", 96)))  # fmt: skip
    metrics, ckpt = tmp_path / "metrics.jsonl", tmp_path / "ckpt"
    train = ["srun", "-N2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "cordee", "launch", "--", "cordee",
             "train", "--config", "finetune-llama", f"model.from_hf={model_dir}", f"data.path={chat}", *SHAPE,
             f"metrics_file={metrics}", f"checkpoint.dir={ckpt}"]  # fmt: skip

    p = subprocess.Popen(train, env=slurm_cluster.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(records(metrics)) < 3:
            assert p.poll() is None, f"srun exited {p.returncode} early: {p.communicate()[1]}"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)
        p.send_signal(signal.SIGUSR1)
        _, err = p.communicate(timeout=TIMEOUT_S)
    except BaseException:
        p.kill()
        p.wait(timeout=10)
        slurm_cluster.cancel_all()
        raise
    assert p.returncode == 75, err
    assert "2 rank(s), gloo, cpu" in err and "finetune-llama" in err
    k = records(metrics)[-1]["step"]
    assert 3 <= k < STEPS and (ckpt / "latest").read_text().strip() == f"step-{k:08d}"

    r = slurm_cluster.srun(train[1:], timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    rows = records(metrics)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    first, last = rows[0]["loss"], sum(row["loss"] for row in rows[-3:]) / 3
    assert last < 0.85 * first, (first, last)
    assert all(0 < row["loss_tokens"] <= 8 * 64 for row in rows)

    out = tmp_path / "export"
    local("export", str(ckpt), str(out), "--quiet")
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and (out / "tokenizer.json").exists()
    model = cordee_model(ckpt)
    x = torch.randint(0, model.cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)
    assert (ours - hftiny.logits_of_hf(out, x)).abs().max().item() < 1e-4
