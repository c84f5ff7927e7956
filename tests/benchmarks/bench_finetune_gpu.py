"""Fine-tuning throughput on one GPU against the pre-training path, in the same run (issue 14).

The model: a 1.26B Llama-architecture model BUILT WITH `transformers` (LlamaConfig hidden 2048,
22 layers, 16 heads, 16 key/value heads, intermediate 5632, vocabulary 32000, 2048 positions;
the shape of cordee's `1b` config), random weights, saved with save_pretrained (bf16
safetensors) to /dev/shm. Chat data: generated conversations of a few hundred words each,
`cordee data prepare --chat` with the model directory's tokenizer and template, packed into rows
of 2048 + 1 tokens.

Cases, each `python -m cordee train` in its own process, one after the other:
  pretrain  `--config 1b`: synthetic data, cordee's own init, plain causal attention (SDPA
            is_causal, the flash path); FSDP2 1-rank NCCL, bf16 compute, fp32 master weights,
            each block compiled.
  finetune  `--config finetune-llama model.from_hf=DIR data.path=CHAT` with the batch of `1b`
            (8 x 2048 per step) and no activation checkpointing, as `1b`: weights read from the
            safetensors, packed conversations (attention kept inside each through a boolean mask,
            positions restarting), the loss over the assistant's tokens only.
Time per step: the wall time between the records of step --warmup and the last step divided by
the steps between. tokens/s counts every token of the batch (padding and masked ones included);
MFU = tokens/s x (6 x params + 12 x layers x width x seq) / peak (cordee.train.metrics). Writes
tests/benchmarks/results/finetune_gpu.json (machine, versions, date, commands) after every case.

    NCCL_NVLS_ENABLE=0 PYTHONPATH=platform:tests python tests/benchmarks/bench_finetune_gpu.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLATFORM_DIR = str(HERE.parents[1] / "platform")
sys.path.insert(0, PLATFORM_DIR)
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/: hftiny (tokenizer, chat template, conversations)
CASE_TIMEOUT_S = 420
SHAPE = {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 16, "num_key_value_heads": 16,
         "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 2048}  # fmt: skip


def work_dir() -> Path:
    """/dev/shm when it has room for the model (2.5 GB in bf16) and the data, else the temp dir."""
    shm = Path("/dev/shm")
    big = shm.is_dir() and shutil.disk_usage(shm).free > 16 << 30
    return Path(tempfile.mkdtemp(prefix="bench-finetune-", dir=shm if big else None))


def build_model(directory: Path) -> float:
    """The transformers model, random init on the GPU, saved as bf16 safetensors; seconds taken."""
    import hftiny
    import torch
    import transformers

    t0 = time.monotonic()
    directory.mkdir(parents=True)
    hftiny.write_tokenizer(directory)
    config = transformers.LlamaConfig(**SHAPE, bos_token_id=0, eos_token_id=4, pad_token_id=1)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(directory))
    del model
    torch.cuda.empty_cache()
    return time.monotonic() - t0


def prepare_chat(model_dir: Path, work: Path, conversations: int) -> dict:
    import hftiny

    jsonl = hftiny.chat_jsonl(work / "chat.jsonl", conversations, length=(150, 450))
    argv = [sys.executable, "-m", "cordee", "data", "prepare", "--chat", "--model-dir", str(model_dir),
            "--seq-len", "2048", "-o", str(work / "chat"), "--quiet", "--json", str(jsonl)]  # fmt: skip
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"data prepare exited {r.returncode}: {r.stderr[-500:]}")
    return json.loads(r.stdout) | {"seconds": time.monotonic() - t0}


def train_case(argv: list[str], steps: int, warmup: int, metrics: Path, log) -> dict:
    from common import run_trainer

    t0 = time.monotonic()
    stderr, by_step, timed = run_trainer(argv, metrics, warmup, CASE_TIMEOUT_S, log)
    out = {
        "command": " ".join(argv[1:]),
        "step_time_s": (by_step[steps]["time"] - by_step[warmup]["time"]) / (steps - warmup),
        "median_step_time_s": statistics.median(row["step_time_s"] for row in timed),
        "first_loss": by_step[1]["loss"],
        "final_loss": by_step[steps]["loss"],
        "peak_mem_gib": by_step[steps]["peak_mem_gib"],
        "setup": [
            line for line in stderr.splitlines() if "FSDP2" in line or "from_hf" in line or "load" in line
        ],
        "wall_s": time.monotonic() - t0,
    }
    if "loss_tokens" in by_step[steps]:  # the targets that count, per step
        out["mean_loss_tokens"] = statistics.mean(row["loss_tokens"] for row in timed)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="steps of each case, warmup included")
    ap.add_argument("--warmup", type=int, default=15, help="first steps left out (compilation)")
    ap.add_argument("--conversations", type=int, default=1200)
    ap.add_argument("--cases", default="pretrain,finetune")
    ap.add_argument("--log", default=None, help="append every case's stderr to this file")
    args = ap.parse_args()

    import torch
    from common import write_result

    from cordee.train.configload import load_config
    from cordee.train.metrics import mfu, peak_tflops
    from cordee.train.model import flops_per_token, num_params

    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA GPU")
        return 0
    import transformers

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PLATFORM_DIR, os.environ.get("PYTHONPATH")) if p)
    cfg = load_config("1b", [])
    gpu = torch.cuda.get_device_name(0)
    peak, peak_source = peak_tflops(gpu, None)
    fpt = flops_per_token(cfg.model, cfg.seq_len)
    tokens = cfg.global_batch * cfg.seq_len
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                "transformers": transformers.__version__,
                "nccl": ".".join(map(str, torch.cuda.nccl.version()))}  # fmt: skip

    def log(text: str) -> None:
        if args.log:
            with open(args.log, "a") as f:
                f.write(text + "\n")

    work = work_dir()
    model_dir = work / "hf"
    results: dict = {"command": " ".join(["python", "tests/benchmarks/bench_finetune_gpu.py", *sys.argv[1:]]),
                     "steps": args.steps, "warmup": args.warmup, "gpu": gpu, "hf_shape": SHAPE,
                     "params": num_params(cfg.model), "flops_per_token": fpt, "tokens_per_step": tokens,
                     "peak_tflops": peak, "peak_source": peak_source, "work_dir": str(work),
                     "cases": {}}  # fmt: skip
    try:
        results["build_model_s"] = build_model(model_dir)
        results["data"] = prepare_chat(model_dir, work, args.conversations)
        print(json.dumps({"build_model_s": results["build_model_s"], "data": results["data"]}), flush=True)
        for case in args.cases.split(","):
            print(f"case {case} ...", flush=True)
            metrics = work / f"{case}.jsonl"
            shared = [f"steps={args.steps}", f"metrics_file={metrics}", "log_interval=20"]
            if case == "pretrain":
                train = ["--config", "1b", *shared]
            elif case == "finetune":
                train = ["--config", "finetune-llama", f"model.from_hf={model_dir}",
                         f"data.path={work / 'chat'}", f"seq_len={cfg.seq_len}",
                         f"global_batch={cfg.global_batch}", f"micro_batch={cfg.micro_batch}",
                         "activation_checkpointing=false", *shared]  # fmt: skip
            else:
                raise ValueError(f"unknown case {case!r}")
            try:
                out = train_case([sys.executable, "-m", "cordee", "train", *train], args.steps, args.warmup,
                                 metrics, log)  # fmt: skip
                out["tokens_per_s"] = tokens / out["step_time_s"]
                out["mfu"] = mfu(out["tokens_per_s"], fpt, peak) if peak else None  # one GPU
            except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError, KeyError) as e:
                out = {"error": f"{type(e).__name__}: {e}"}
            results["cases"][case] = out
            print(json.dumps({case: out}, indent=1), flush=True)
            c = results["cases"]
            if "tokens_per_s" in c.get("pretrain", {}) and "tokens_per_s" in c.get("finetune", {}):
                results["finetune_vs_pretrain"] = (
                    c["finetune"]["tokens_per_s"] / c["pretrain"]["tokens_per_s"]
                )
            path = write_result("finetune_gpu", results, versions)  # after every case: a kill keeps the rest
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {path}")
    print(json.dumps({k: v for k, v in results.items() if k != "cases"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
