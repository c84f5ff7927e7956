"""`cordee export` on real checkpoints of real `cordee train` runs: a 2-rank pre-training run (Llama
shape) and a 1-rank fine-tuning run from an Apertus model built by `transformers`. `transformers`
loads each export and its logits equal cordee's on the same tokens (fp32, 1e-4); a checkpoint
saved by 2 ranks and the same state saved by 1 exports to identical tensors; small shards come
with an index; tokenizer files are copied; bad input exits 2 with one line and leaves nothing.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from launchvars import clean_env

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import hftiny  # noqa: E402
from hftiny import cordee_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from cordee.train.checkpoint import Checkpointer  # noqa: E402
from cordee.train.export import export  # noqa: E402

CORDEE = str(Path(sys.executable).with_name("cordee"))
TIMEOUT_S = 240
TINY = ["--config", "tiny", "steps=2", "log_interval=1000"]


def cordee(*argv: str, preexec_fn=None) -> subprocess.CompletedProcess:
    env = clean_env(names=("OMP_NUM_THREADS",), TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([CORDEE, *argv], env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                          preexec_fn=preexec_fn)  # fmt: skip


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr
    return r


def manifest(step_dir: Path) -> dict:
    return json.loads((step_dir / "cordee.json").read_text())


def tensors(directory: Path) -> dict:
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        out |= load_file(str(f))
    return out


def tokens(vocab: int, seed: int = 0):
    return torch.randint(0, vocab, (2, 48), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """The checkpoint root of a 2-rank FSDP2 pre-training run of the tiny Llama shape."""
    root = tmp_path_factory.mktemp("pretrain")
    ok(cordee("launch", "--profile", "none", "--nproc-per-node", "2", "--", CORDEE, "train", *TINY,
              f"checkpoint.dir={root / 'ckpt'}"))  # fmt: skip
    return root / "ckpt"


@pytest.fixture(scope="module")
def apertus(tmp_path_factory) -> tuple[Path, Path]:
    """(source model dir, checkpoint root) of a 1-rank fine-tuning run from an Apertus model."""
    root = tmp_path_factory.mktemp("apertus")
    source = hftiny.model_dir(root / "hf", "apertus", seed=3)
    ok(cordee("train", "--config", "finetune-apertus", f"model.from_hf={source}", "seq_len=48",
              "global_batch=4", "micro_batch=2", "steps=2", "warmup_steps=1", "lr=1e-2", "min_lr=1e-3",
              "precision=fp32", "compile=false", "activation_checkpointing=false", "device=cpu",
              f"checkpoint.dir={root / 'ckpt'}"))  # fmt: skip
    return source, root / "ckpt"


def test_two_rank_and_one_rank_checkpoints_export_identical_tensors_that_transformers_loads(
    pretrained, tmp_path
):
    step_dir = pretrained / (pretrained / "latest").read_text().strip()
    assert manifest(step_dir)["world_size"] == 2
    # the same state saved by one process: DCP gathers the 2-rank shards on load
    model = cordee_model(pretrained)
    one = Checkpointer(str(tmp_path / "one"), 1, async_save=False, rank=0, world_size=1)
    one.save(2, {"model": model}, manifest(step_dir)["extra"], sync=True)
    two_out = export(str(pretrained), str(tmp_path / "from-2"))
    one_out = export(str(tmp_path / "one" / "step-00000002"), str(tmp_path / "from-1"))
    assert (two_out["world_size"], one_out["world_size"]) == (2, 1)
    a, b = tensors(tmp_path / "from-2"), tensors(tmp_path / "from-1")
    assert sorted(a) == sorted(b) and "lm_head.weight" in a and "model.embed_tokens.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert two_out["copied"] == [] and two_out["files"] == ["model.safetensors"]

    x = tokens(model.cfg.vocab_size)
    with torch.no_grad():
        ours = model(x)
    theirs = hftiny.logits_of_hf(tmp_path / "from-2", x)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_apertus_fine_tuned_export_is_sharded_with_an_index_and_carries_the_tokenizer(apertus, tmp_path):
    source, ckpt = apertus
    out = tmp_path / "export"
    r = ok(cordee("export", str(ckpt), str(out), "--max-shard-size", "40KB", "--json", "--quiet"))
    summary = json.loads(r.stdout)
    assert summary["schema"] == "cordee.export/1" and summary["step"] == 2 and summary["dtype"] == "fp32"
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in tensors(out).values())
    for shard in shards:  # at most 40 KB of tensors, or one larger tensor alone
        held = load_file(str(out / shard))
        assert len(held) == 1 or sum(t.numel() * 4 for t in held.values()) <= 40_000
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "apertus" and config["eos_token_id"] == 4  # the source's ids kept

    model = cordee_model(ckpt)
    x = tokens(model.cfg.vocab_size, seed=1)
    with torch.no_grad():
        ours = model(x)
    theirs = hftiny.logits_of_hf(out, x)
    assert (ours - theirs).abs().max().item() < 1e-4
    # trained: the export is not the source model
    assert (hftiny.logits_of_hf(source, x) - theirs).abs().max().item() > 1e-3

    from transformers import AutoTokenizer

    conversation = [{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w2 w1"}]
    ids = [AutoTokenizer.from_pretrained(str(d)).apply_chat_template(conversation) for d in (source, out)]
    assert ids[0] == ids[1]


def test_bf16_export_and_force(pretrained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old-file").write_text("x")
    r = cordee("export", str(pretrained), str(out), "--quiet")
    assert r.returncode == 2 and "exists (--force replaces it)" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    ok(cordee("export", str(pretrained), str(out), "--dtype", "bf16", "--force", "--quiet"))
    assert not (out / "old-file").exists()
    assert {t.dtype for t in tensors(out).values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left


def test_fine_tuning_configs_take_the_shape_from_the_model_and_keep_the_usual_schedule(tmp_path):
    from cordee.errors import InputError
    from cordee.train.config import learning_rate
    from cordee.train.configload import load_config

    source = hftiny.model_dir(tmp_path / "hf", "llama", max_position_embeddings=4096)
    cfg = load_config("finetune-llama", [f"model.from_hf={source}"])
    assert (cfg.model.dim, cfg.model.n_layers, cfg.model.vocab_size) == (64, 2, 52)
    assert (cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps, cfg.weight_decay) == (2e-5, 2e-6, 30, 1000, 0.0)
    assert cfg.precision == "bf16" and learning_rate(cfg, 15) == cfg.lr / 2
    assert learning_rate(cfg, cfg.steps) == pytest.approx(cfg.min_lr)
    with pytest.raises(InputError, match=r"model\.arch = 'apertus' but model\.from_hf"):
        load_config("finetune-apertus", [f"model.from_hf={source}"])
    r = cordee("train", "--config", "finetune-llama", "--dry-run")
    assert r.returncode == 2 and "needs model.from_hf=DIR" in r.stderr and len(r.stderr.splitlines()) == 1


def fail(*argv: str, preexec_fn=None) -> str:
    r = cordee("export", *argv, "--quiet", preexec_fn=preexec_fn)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("cordee: error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    return r.stderr


def test_bad_input_exits_2_with_one_line_and_leaves_no_output(pretrained, tmp_path):
    out = tmp_path / "out"
    assert "no such directory" in fail(str(tmp_path / "missing"), str(out))
    (tmp_path / "file").write_text("x")
    assert "not a directory" in fail(str(tmp_path / "file"), str(out))
    assert "not a cordee checkpoint" in fail(str(tmp_path), str(out))
    assert "--max-shard-size" in fail(str(pretrained), str(out), "--max-shard-size", "5XB")

    damaged = tmp_path / "damaged"
    shutil.copytree(pretrained, damaged)
    step_dir = damaged / (damaged / "latest").read_text().strip()
    with open(step_dir / "__1_0.distcp", "r+b") as f:
        f.truncate(100)
    assert "damaged or incomplete: __1_0.distcp has 100 bytes" in fail(str(damaged), str(out))

    old = tmp_path / "old"  # a checkpoint of a cordee that did not record the model config
    shutil.copytree(pretrained, old)
    step_dir = old / (old / "latest").read_text().strip()
    doc = manifest(step_dir)
    del doc["extra"]["model"]
    (step_dir / "cordee.json").write_text(json.dumps(doc))
    assert "records no model config" in fail(str(old), str(out))
    doc["extra"]["model"] = manifest(pretrained / step_dir.name)["extra"]["model"] | {"arch": "gpt2"}
    (step_dir / "cordee.json").write_text(json.dumps(doc))
    assert "model.arch='gpt2' is not one of llama, apertus" in fail(str(old), str(out))
    assert "holds the checkpoint" in fail(str(pretrained), str(pretrained.parent), "--force")

    def small_files() -> None:  # "no space": every write past 64 KiB fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    assert "failed" in fail(str(pretrained), str(out), preexec_fn=small_files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "file", "old"]  # nothing partial
