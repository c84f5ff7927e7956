"""Fine-tuning on a real GPU: a tiny Llama and Apertus built by `transformers`, imported into
cordee's model on CUDA (logits equal in fp32), then a few bf16 fine-tuning steps of `cordee train
--config finetune-llama` (FSDP2 in a 1-rank NCCL group) on a chat set that lower the masked loss,
and `cordee export` of the result, which `transformers` loads with cordee's logits.

Runs on the lent GPU node; skipped where torch sees no CUDA GPU. `bench_finetune_gpu.py`
measures the throughput of a 1B model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cordee

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import hftiny  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU (runs on the GPU node)"),
]
PLATFORM_DIR = str(Path(cordee.__file__).resolve().parents[1])
CORDEE = [sys.executable, "-m", "cordee"]
TIMEOUT_S = 300


def env() -> dict[str, str]:
    launch = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    clean = {k: v for k, v in os.environ.items() if k not in launch}
    path = os.pathsep.join(p for p in (PLATFORM_DIR, clean.get("PYTHONPATH")) if p)
    return {**clean, "PYTHONPATH": path, "NCCL_NVLS_ENABLE": "0", "TRANSFORMERS_VERBOSITY": "error"}


def run(*argv: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*CORDEE, *argv], env=env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    return r


# In a child process: CUDA in pytest's own process would hold a context (0.7 GiB) for the rest of
# the session, which the GPU preflight tests then rightly report as a foreign process.
LOGITS_CHILD = """
import sys
import torch
from transformers import AutoModelForCausalLM
from cordee.train.config import ModelConfig
from cordee.train.hfconfig import model_fields
from cordee.train.hfload import load_hf_weights
from cordee.train.model import Transformer

source = sys.argv[1]
cfg = ModelConfig(from_hf=source, **model_fields(source))
with torch.device("cuda"):
    model = Transformer(cfg)
load_hf_weights(model, source, cfg)
theirs = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).cuda().eval()
generator = torch.Generator("cuda").manual_seed(0)
tokens = torch.randint(0, cfg.vocab_size, (2, 96), device="cuda", generator=generator)
torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
with torch.no_grad():
    print((model.eval()(tokens) - theirs(tokens).logits).abs().max().item())
"""


@pytest.mark.parametrize("arch", ["llama", "apertus"])
def test_imported_model_gives_the_logits_of_transformers_on_cuda_in_fp32(arch, tmp_path):
    source = hftiny.model_dir(tmp_path / "hf", arch, seed=7)
    r = subprocess.run([sys.executable, "-c", LOGITS_CHILD, str(source)], env=env(), capture_output=True,
                       text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert r.returncode == 0, r.stderr
    diff = float(r.stdout.split()[-1])
    assert diff < 1e-4, diff


def test_bf16_fine_tuning_lowers_the_masked_loss_and_its_export_loads(tmp_path):
    source = hftiny.model_dir(tmp_path / "hf", "llama", seed=9)
    chat = tmp_path / "chat"
    conversations = hftiny.chat_jsonl(tmp_path / "chat.jsonl", 400, length=(4, 12))
    run("data", "prepare", "--chat", "--model-dir", str(source), "--seq-len", "128", "-o", str(chat),
        "--quiet", str(conversations))  # fmt: skip
    metrics, ckpt = tmp_path / "metrics.jsonl", tmp_path / "ckpt"
    r = run("train", "--config", "finetune-llama", f"model.from_hf={source}", f"data.path={chat}",
            "seq_len=128", "global_batch=16", "micro_batch=8", "steps=40", "warmup_steps=4", "lr=3e-3",
            "min_lr=3e-4", "compile=false", "device=cuda", f"metrics_file={metrics}",
            f"checkpoint.dir={ckpt}")  # fmt: skip
    assert "FSDP2 (bf16 params and compute, fp32 reduce and master weights)" in r.stderr
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 41))
    first, last = rows[0]["loss"], sum(row["loss"] for row in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert all(row["device"] == "cuda" and row["mfu"] is not None for row in rows)

    out = tmp_path / "export"
    run("export", str(ckpt), str(out), "--quiet")
    model = hftiny.cordee_model(ckpt)  # on the CPU, fp32
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(tokens)
    assert (ours - hftiny.logits_of_hf(out, tokens)).abs().max().item() < 1e-4


def test_compiled_fine_tuning_on_packed_rows_uses_flex_attention_and_learns(tmp_path):
    """With compile on a GPU, packed rows go through FlexAttention (forward and backward)."""
    source = hftiny.model_dir(tmp_path / "hf", "apertus", seed=4)
    chat = tmp_path / "chat"
    conversations = hftiny.chat_jsonl(tmp_path / "chat.jsonl", 400, length=(4, 12))
    run("data", "prepare", "--chat", "--model-dir", str(source), "--seq-len", "128", "-o", str(chat),
        "--quiet", str(conversations))  # fmt: skip
    metrics = tmp_path / "metrics.jsonl"
    r = run("train", "--config", "finetune-apertus", f"model.from_hf={source}", f"data.path={chat}",
            "seq_len=128", "global_batch=16", "micro_batch=8", "steps=40", "warmup_steps=4", "lr=3e-3",
            "min_lr=3e-4", "compile=true", "device=cuda", f"metrics_file={metrics}")  # fmt: skip
    assert "packed rows: FlexAttention" in r.stderr, r.stderr
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    first, last = rows[0]["loss"], sum(row["loss"] for row in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
