"""Hugging Face import: tiny random models built and saved by `transformers` itself (Llama and
Apertus, with Llama 3.1 rotary scaling, tied embeddings, an explicit head size), loaded into
cordee's Transformer from sharded safetensors: the logits agree in float32, also for packed
sequences; a 2-rank FSDP2 load reads only each rank's rows and equals the single-process load;
bad directories exit 2 with one line; `cordee train model.from_hf=DIR` trains from the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from cordee.errors import InputError  # noqa: E402
from cordee.train.config import ModelConfig  # noqa: E402
from cordee.train.hfconfig import hf_config, hf_names, model_fields  # noqa: E402
from cordee.train.hfload import HFCheckpoint, load_hf_weights  # noqa: E402
from cordee.train.model import Transformer, num_params  # noqa: E402

CORDEE = str(Path(sys.executable).with_name("cordee"))
SHAPE = dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}  # fmt: skip
VARIANTS = {
    "llama": ("llama", {"rms_norm_eps": 1e-5}),
    "llama-rope-llama3": ("llama", {"rope_parameters": LLAMA3}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-head-dim-32": ("llama", {"head_dim": 32}),
    "apertus": ("apertus", {"rope_parameters": LLAMA3}),
    "apertus-tied-no-scaling": (
        "apertus",
        {"tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
    ),
}  # fmt: skip


def hf_model(arch: str, seed: int = 0, **overrides):
    """A transformers model with every parameter random (norms and xIELU alphas too: a name
    mapped to the wrong tensor must change the logits)."""
    classes = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "apertus": (transformers.ApertusConfig, transformers.ApertusForCausalLM),
    }
    config_class, model_class = classes[arch]
    torch.manual_seed(seed)
    model = model_class(config_class(**(SHAPE | overrides))).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if name.endswith(("alpha_p", "alpha_n")) else 0.1
            p.copy_((1.0 if "norm" in name else 0.0) + scale * torch.randn_like(p))
    return model


def save(model, path: Path, shard: str = "40KB") -> str:
    model.save_pretrained(path, max_shard_size=shard)  # several shards and the index
    return str(path)


def cordee_model(model_dir: str) -> tuple[Transformer, ModelConfig]:
    cfg = ModelConfig(**model_fields(model_dir))
    model = Transformer(cfg).eval()
    load_hf_weights(model, model_dir, cfg)
    return model, cfg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each variant saved once: {variant: (directory, transformers model)}."""
    out = {}
    for name, (arch, overrides) in VARIANTS.items():
        model = hf_model(arch, **overrides)
        out[name] = (save(model, tmp_path_factory.mktemp(name)), model)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_transformers(saved, variant):
    model_dir, hf = saved[variant]
    files = sorted(os.listdir(model_dir))
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2
    ours, cfg = cordee_model(model_dir)
    assert num_params(cfg) == sum(p.numel() for p in ours.parameters())
    assert num_params(cfg) == sum(p.numel() for p in hf.parameters())
    tokens = torch.randint(0, SHAPE["vocab_size"], (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = hf(tokens).logits, ours(tokens)
    assert expected.abs().max() > 0.1  # not a degenerate comparison
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", ["llama-rope-llama3", "apertus"])
def test_packed_sequences_with_segments_match_each_sequence_alone(saved, variant):
    model_dir, hf = saved[variant]
    ours, _ = cordee_model(model_dir)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 512, (1, 23), generator=g), torch.randint(0, 512, (1, 41), generator=g)
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(23), torch.arange(41)])[None]
    segments = torch.tensor([0] * 23 + [1] * 41)[None]
    with torch.no_grad():
        got = ours(packed, positions=positions, segments=segments)
        alone = torch.cat([hf(a).logits, hf(b).logits], dim=1)
        unmasked = ours(packed)
    assert (got - alone).abs().max().item() < 1e-4
    assert (unmasked[:, 23:] - alone[:, 23:]).abs().max().item() > 1e-2  # the mask did something


def test_rope_scaling_changes_the_model(saved):
    # the llama3 variant differs from plain rotary beyond original_max_position_embeddings
    model_dir, _ = saved["llama-rope-llama3"]
    fields = model_fields(model_dir)
    assert fields["rope_scaling"] == "llama3" and fields["rope_original_max_len"] == 32
    scaled, cfg = cordee_model(model_dir)
    plain = Transformer(ModelConfig(**(fields | {"rope_scaling": "none"}))).eval()
    plain.load_state_dict(scaled.state_dict())
    tokens = torch.randint(0, 512, (1, 60))
    with torch.no_grad():
        assert (scaled(tokens) - plain(tokens)).abs().max() > 1e-3


def test_transformers_4_config_fields_are_read(tmp_path, saved):
    model_dir, _ = saved["llama-rope-llama3"]
    data = json.loads(Path(model_dir, "config.json").read_text())
    rope = data.pop("rope_parameters")
    data["rope_theta"] = rope.pop("rope_theta")
    data["rope_scaling"] = rope
    Path(tmp_path, "config.json").write_text(json.dumps(data))
    assert model_fields(str(tmp_path)) == model_fields(model_dir)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hf_config_round_trips_through_transformers(tmp_path, saved, variant):
    model_dir, hf = saved[variant]
    cfg = ModelConfig(**model_fields(model_dir))
    base = json.loads(Path(model_dir, "config.json").read_text())
    Path(tmp_path, "config.json").write_text(json.dumps(hf_config(cfg, base)))
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert loaded.model_type == hf.config.model_type
    assert loaded.rope_parameters == hf.config.rope_parameters
    assert model_fields(str(tmp_path)) == model_fields(model_dir)
    # hf_names covers exactly the tensors transformers saves
    saved_names = set(HFCheckpoint(model_dir).where)
    assert set(hf_names(cfg).values()) == saved_names


def rewrite_shard(model_dir: str, tensor: str, change) -> str:
    """Rewrite the shard holding `tensor` with change(dict of its tensors) applied."""
    checkpoint = HFCheckpoint(model_dir)
    name = checkpoint.where[tensor]
    path = os.path.join(model_dir, name)
    tensors = safetensors_torch.load_file(path)
    change(tensors)
    safetensors_torch.save_file(tensors, path, metadata={"format": "pt"})
    return name


def copy_of(saved, variant: str, tmp_path: Path) -> str:
    import shutil

    target = tmp_path / "model"
    shutil.copytree(saved[variant][0], target)
    return str(target)


def load_error(model_dir: str) -> str:
    cfg = ModelConfig(**model_fields(model_dir))
    with pytest.raises(InputError) as e:
        load_hf_weights(Transformer(cfg), model_dir, cfg)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_tensor_of_the_wrong_shape_is_named_with_both_shapes(tmp_path, saved):
    model_dir = copy_of(saved, "llama", tmp_path)
    tensor = "model.layers.1.mlp.up_proj.weight"
    shard = rewrite_shard(model_dir, tensor, lambda t: t.__setitem__(tensor, t[tensor][:100].clone()))
    assert load_error(model_dir) == f"{tensor}: shape [100, 64] in {shard}, expected [176, 64]"


def test_a_missing_tensor_is_named(tmp_path, saved):
    model_dir = copy_of(saved, "apertus", tmp_path)
    tensor = "model.layers.0.self_attn.k_norm.weight"
    rewrite_shard(model_dir, tensor, lambda t: t.pop(tensor))
    message = load_error(model_dir)
    assert message.endswith(f"tensor {tensor} is missing") and "model.from_hf" in message


def test_a_tensor_the_model_lacks_is_named(tmp_path, saved):
    model_dir = copy_of(saved, "llama", tmp_path)
    tensor = "model.norm.weight"
    extra = "model.layers.0.mlp.extra.weight"
    rewrite_shard(model_dir, tensor, lambda t: t.__setitem__(extra, t[tensor].clone()))
    assert "tensor model.layers.0.mlp.extra.weight is not part of this model" in load_error(model_dir)


def test_a_truncated_safetensors_file_is_named(tmp_path, saved):
    model_dir = copy_of(saved, "llama", tmp_path)
    shard = HFCheckpoint(model_dir).where["model.layers.0.mlp.down_proj.weight"]
    path = Path(model_dir, shard)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = load_error(model_dir)
    assert shard in message and "not a readable safetensors file" in message


def dry_run(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([CORDEE, "train", "--config", "tiny", *overrides, "--dry-run"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_config_problems_exit_2_in_one_line_through_the_cli(tmp_path, saved):
    missing = dry_run(f"model.from_hf={tmp_path}")
    assert missing.returncode == 2 and "no config.json" in missing.stderr
    config = json.loads(Path(saved["llama"][0], "config.json").read_text())
    Path(tmp_path, "config.json").write_text(json.dumps(config | {"model_type": "mistral"}))
    mistral = dry_run(f"model.from_hf={tmp_path}")
    assert mistral.returncode == 2
    assert "model_type = 'mistral' is not supported (llama, apertus)" in mistral.stderr
    Path(tmp_path, "config.json").write_text(json.dumps(config | {"attention_bias": True}))
    bias = dry_run(f"model.from_hf={tmp_path}")
    assert bias.returncode == 2 and "attention_bias = true" in bias.stderr
    for r in (missing, mistral, bias):
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # a shape key that disagrees with config.json names both values
    Path(tmp_path, "config.json").write_text(json.dumps(config))
    clash = dry_run(f"model.from_hf={tmp_path}", "model.ffn_dim=128")
    assert clash.returncode == 2 and "model.ffn_dim = 128 but model.from_hf" in clash.stderr
    assert "has 176" in clash.stderr
    ok = dry_run(f"model.from_hf={tmp_path}")
    assert ok.returncode == 0, ok.stderr
    resolved = json.loads(ok.stdout)["config"]["model"]
    assert resolved["from_hf"] == str(tmp_path) and resolved["norm_eps"] == 1e-5


def test_training_from_a_hf_model_starts_at_transformers_loss(tmp_path, saved):
    from cordee.train.configload import load_config
    from cordee.train.data import open_source
    from cordee.train.order import rank_batch

    model_dir, hf = saved["llama"]
    metrics = tmp_path / "metrics.jsonl"
    overrides = [f"model.from_hf={model_dir}", "steps=3", f"metrics_file={metrics}"]
    launcher = ("SLURM_", "MASTER_", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    r = subprocess.run([CORDEE, "train", "--config", "tiny", *overrides], capture_output=True, text=True,
                       timeout=120, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"weights from {model_dir}" in r.stderr
    first = json.loads(metrics.read_text().splitlines()[0])
    cfg = load_config("tiny", overrides)
    source = open_source(cfg.data, cfg.model.vocab_size)
    inputs, targets = rank_batch(source, cfg.data.seed, 0, cfg.global_batch, cfg.seq_len, 0, 1)
    with torch.no_grad():
        logits = hf(inputs).logits
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    assert first["step"] == 1 and abs(first["loss"] - expected) < 1e-4


SHARDED_LOAD = textwrap.dedent(
    """
    import json, os, sys, torch, torch.distributed as dist
    from cordee.train import parallel
    from cordee.train.config import ModelConfig
    from cordee.train.hfconfig import model_fields
    from cordee.train.hfload import HFCheckpoint, load_hf_weights
    from cordee.train.model import Transformer

    class Counted(HFCheckpoint):  # records every read: name, rows, bytes
        reads = []

        def read_rows(self, name, start=None, stop=None):
            data = super().read_rows(name, start, stop)
            Counted.reads.append([name, start, stop, data.numel() * data.element_size()])
            return data

    model_dir, out = sys.argv[1], sys.argv[2]
    ranks = parallel.read_ranks(os.environ)
    d = parallel.init(ranks, "cpu", 120.0)
    cfg = ModelConfig(**model_fields(model_dir))
    with torch.device("meta"):
        model = Transformer(cfg)
    model, setup = parallel.wrap_model(model, d, precision="fp32", compile=False,
                                       activation_checkpointing=False)
    assert "FSDP2" in setup, setup
    model.to_empty(device="cpu")
    model.reset_buffers()
    load_hf_weights(model, model_dir, cfg, checkpoint_class=Counted)
    full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in model.state_dict().items()}
    tokens = torch.arange(40)[None] % cfg.vocab_size
    logits = model(tokens)
    if d.rank == 0:
        torch.save({"state": full, "logits": logits.detach()}, out + ".pt")
    with open(f"{out}.{d.rank}.json", "w") as f:
        json.dump(Counted.reads, f)
    parallel.shutdown()
    os._exit(0)  # skip finalization: gloo threads can abort there (pytorch PR 179291)
    """
)


def test_two_ranks_read_only_their_rows_and_load_what_one_process_loads(tmp_path, saved):
    model_dir, _ = saved["apertus"]
    script = tmp_path / "sharded_load.py"
    script.write_text(SHARDED_LOAD)
    out = str(tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "TORCHELASTIC"))}
    env |= {"GLOO_SOCKET_IFNAME": "lo"}
    r = subprocess.run(
        [CORDEE, "launch", "--profile", "none", "--nproc-per-node", "2", "--", sys.executable, str(script),
         model_dir, out],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    single, cfg = cordee_model(model_dir)
    sharded = torch.load(out + ".pt")
    assert sharded["state"].keys() == single.state_dict().keys()
    for name, value in single.state_dict().items():
        assert torch.equal(sharded["state"][name], value), name
    with torch.no_grad():
        assert torch.equal(sharded["logits"], single(torch.arange(40)[None]))
    checkpoint = HFCheckpoint(model_dir)
    logs = [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in (0, 1)]
    reads = [{n: (a, b, size) for n, a, b, size in log} for log in logs]
    for theirs in hf_names(cfg).values():
        shape = checkpoint.shape(theirs)
        full_bytes = checkpoint.read_rows(theirs).numel() * 4
        if not shape:  # xIELU's beta and eps: scalars every rank keeps whole
            assert all(rank[theirs][:2] == (None, None) for rank in reads)
            continue
        rows, chunk = shape[0], -(-shape[0] // 2)
        for rank in (0, 1):  # torch.chunk's split: rank 0 the first ceil(rows / 2) rows
            start, stop, _ = reads[rank][theirs]
            assert (start, stop) == (min(rank * chunk, rows), min((rank + 1) * chunk, rows)), theirs
        assert reads[0][theirs][2] + reads[1][theirs][2] == full_bytes, theirs  # each byte read once
    per_rank = [sum(size for _, _, size in rank.values()) for rank in reads]
    assert max(per_rank) < 0.6 * sum(per_rank)
