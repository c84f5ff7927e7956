"""`make demo`, fine-tuning step on the Slurm test cluster: a tiny Llama built and saved by
`transformers` (random weights, a small tokenizer with a Llama 3 style chat template), a chat set
prepared with `cordee data prepare --chat` (only the assistant's tokens count), two nodes
fine-tuning it with `srun ... cordee launch -- cordee train --config finetune-llama
model.from_hf=DIR`, then `cordee export` and `transformers` loading the export: its logits must
equal cordee's, and its greedy answer to a held-out question is shown (the task: repeat the
user's words reversed). Returns the list of problems.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hftiny
from launchvars import clean_env

# transformers' progress bars and advice would bury the demo's lines
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
STEPS = 300
SHAPE = ["seq_len=64", "global_batch=8", "micro_batch=4", f"steps={STEPS}", "warmup_steps=6", "lr=1e-2",
         "min_lr=1e-3", "precision=fp32", "compile=false", "activation_checkpointing=false", "device=cpu",
         "log_interval=60", "checkpoint.interval=100"]  # fmt: skip


def _cordee(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    print(f"\n== cordee {' '.join(argv)}")
    cordee = str(Path(sys.executable).with_name("cordee"))
    return subprocess.run([cordee, *argv], env=clean_env(), capture_output=True, text=True, timeout=timeout)


def _answer(out: Path, words: list[str]) -> str:
    """The exported model's greedy answer (transformers' generate) to a user turn of `words`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    messages = [{"role": "system", "content": "w0 w1"}, {"role": "user", "content": " ".join(words)}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=len(words) + 1, do_sample=False, pad_token_id=1)
    return tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def finetune_step(cluster) -> list[str]:
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="cordee-demo-ft-"))
    try:
        model_dir = hftiny.model_dir(tmp / "hf", "llama", seed=3)
        print(f"\n== a tiny Llama built by transformers in {model_dir}: "
              f"{', '.join(sorted(p.name for p in model_dir.iterdir()))}")  # fmt: skip
        chat = tmp / "chat"
        cp = _cordee("data", "prepare", "--chat", "--model-dir", str(model_dir), "--seq-len", "64", "-o",
                     str(chat), "--quiet", str(hftiny.chat_jsonl(tmp / "chat.jsonl", 400)))  # fmt: skip
        print(cp.stdout.rstrip() or cp.stderr.rstrip())
        if cp.returncode != 0:
            return [f"data prepare --chat failed (exit {cp.returncode})"]
        metrics, ckpt = tmp / "metrics.jsonl", tmp / "ckpt"
        args = ["-N2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "cordee", "launch", "--", "cordee",
                "train", "--config", "finetune-llama", f"model.from_hf={model_dir}", f"data.path={chat}",
                *SHAPE, f"metrics_file={metrics}", f"checkpoint.dir={ckpt}"]  # fmt: skip
        print(f"\n== srun {' '.join(args[:11])} ... ({STEPS} steps)")
        t0 = time.monotonic()
        r = cluster.srun(args, timeout=600)
        print("\n".join(line for line in r.stderr.splitlines() if "cordee train:" in line))
        if r.returncode != 0:
            return [f"fine-tuning on 2 nodes failed (srun exit {r.returncode}): {r.stderr[-500:]}"]
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        first, last = rows[0]["loss"], sum(row["loss"] for row in rows[-5:]) / 5
        print(f"{len(rows)} steps in {time.monotonic() - t0:.0f}s; masked loss {first:.3f} -> {last:.3f}")
        problems = [] if last < 0.5 * first else [f"the masked loss did not halve: {first:.3f} -> {last:.3f}"]
        out = tmp / "export"
        cp = _cordee("export", str(ckpt), str(out), "--quiet")
        print(cp.stdout.rstrip() or cp.stderr.rstrip())
        if cp.returncode != 0:
            return [*problems, f"export failed (exit {cp.returncode}): {cp.stderr.strip()}"]
        model = hftiny.cordee_model(ckpt)
        x = torch.randint(0, model.cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(9))
        with torch.no_grad():
            diff = (model(x) - hftiny.logits_of_hf(out, x)).abs().max().item()
        print(f"transformers loads the export; largest logit difference to cordee's model: {diff:.2e}")
        if diff >= 1e-4:
            problems.append(f"the export's logits differ from cordee's by {diff:.2e}")
        words = ["w3", "w1", "w6", "w2"]
        answer = _answer(out, words)
        expected = " ".join(reversed(words))
        print(f"question: {' '.join(words)}  expected: {expected}  the export answers: {answer}")
        return problems
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
