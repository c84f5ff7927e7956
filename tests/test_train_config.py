"""Trainer configs: shipped files load, overrides are read by the key's type, every bad input is one
line naming the file or override, the key and the value; the README's key table matches the code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from cordee.errors import InputError
from cordee.train.config import (
    CheckpointConfig,
    DataConfig,
    ModelConfig,
    TrainConfig,
    check_world,
    config_hash,
    grad_accum_steps,
    key_docs,
    key_table_markdown,
    learning_rate,
)
from cordee.train.configload import CONFIGS_DIR, load_config, shipped_configs

README = Path(__file__).resolve().parents[1] / "platform" / "cordee" / "train" / "README.md"

MODEL = """
[model]
vocab_size = 512
dim = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_dim = 176
max_seq_len = 64
"""


def write(tmp_path: Path, text: str, name: str = "run.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(source: str, overrides=()) -> str:
    with pytest.raises(InputError) as e:
        load_config(source, list(overrides))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_every_shipped_config_loads_and_fits_one_rank():
    assert set(shipped_configs()) >= {"tiny", "125m", "1b", "8b"}
    for name in shipped_configs():
        first_line = (CONFIGS_DIR / f"{name}.toml").read_text().splitlines()[0]
        assert first_line.startswith(f"# {name}:")  # each file says where its shape comes from
        if name.startswith("finetune-"):  # the shape is the Hugging Face model's: none without it
            with pytest.raises(InputError, match=r"needs model\.from_hf=DIR"):
                load_config(name, [])
            continue
        cfg = load_config(name, [])
        assert cfg.name == name
        check_world(cfg, 1)


def test_a_file_with_only_the_required_keys_gets_the_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "seq_len = 32\n" + MODEL), [])
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert cfg.steps == defaults["steps"] and cfg.stop_signals == ("SIGUSR1", "SIGUSR2", "SIGTERM")
    assert cfg.data.path == "synthetic" and cfg.checkpoint.dir == "" and cfg.peak_tflops is None


def test_overrides_are_read_by_the_type_of_their_key_and_win_over_the_file():
    cfg = load_config(
        "tiny",
        [
            "model.n_layers=3",
            "lr=1e-3",
            "min_lr=0",
            "compile=TRUE",
            "checkpoint.async_save=false",
            "checkpoint.dir=/tmp/ck",
            "stop_signals=SIGUSR2, SIGTERM",
            "peak_tflops=123.5",
        ],
    )
    assert (cfg.model.n_layers, cfg.lr, cfg.min_lr, cfg.compile) == (3, 1e-3, 0.0, True)
    assert cfg.checkpoint.async_save is False and cfg.checkpoint.dir == "/tmp/ck"
    assert cfg.stop_signals == ("SIGUSR2", "SIGTERM") and cfg.peak_tflops == 123.5
    assert load_config("tiny", ["peak_tflops=123", "peak_tflops=auto"]).peak_tflops is None
    assert load_config("tiny", ["stop_signals="]).stop_signals == ()
    assert isinstance(load_config("tiny", ["lr=1"]).lr, float)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.n_layers=two", "override 'model.n_layers=two': model.n_layers: 'two' is not int"),
        ("model.n_layers=2.0", "is not int"),
        ("model.n_layers=١٢", "is not int"),  # other scripts' digits
        ("lr=nan", "'nan' is not float"),
        ("lr=inf", "'inf' is not float"),
        ("lr=1_0", "'1_0' is not float"),
        ("lr=1e999", "is not a finite number"),
        ("compile=yes", "compile: 'yes' is not bool"),
        ("peak_tflops=fast", "peak_tflops: 'fast' is not float or \"auto\""),
        ("model.n_layer=3", "unknown key 'model.n_layer' (did you mean 'model.n_layers'?"),
        ("modle.dim=3", "did you mean 'model.dim'?"),
        ("steps", "expected key=value"),
        ("=3", "expected key=value"),
        ("model=3", "'model' is a table, not a value"),
    ],
)
def test_bad_overrides_are_refused_in_one_line(override, expected):
    assert expected in error_of("tiny", [override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.n_heads=5", "model.n_heads: 5 does not divide model.dim 64"),
        ("model.n_kv_heads=3", "model.n_kv_heads: 3 does not divide model.n_heads 4"),
        ("model.n_heads=64", "model.dim / model.n_heads = 1: rotary embeddings need an even head size"),
        ("seq_len=65", "seq_len: 65 is longer than model.max_seq_len 64"),
        ("micro_batch=3", "micro_batch: 3 does not divide global_batch 8"),
        ("steps=0", "steps: 0 must be >= 1"),
        ("lr=0", "lr: 0.0 must be > 0.0"),
        ("min_lr=1", "min_lr: 1.0 is above lr"),
        ("beta2=1", "beta2: 1.0 must be < 1.0"),
        ("model.vocab_size=1", "model.vocab_size: 1 must be >= 2"),
        ("model.dim=99999999", "model.dim: 99999999 must be <= 65536"),
        ("precision=fp16", "precision: 'fp16' is not one of bf16, fp32"),
        ("device=tpu", "device: 'tpu' is not one of auto, cuda, cpu"),
        ("stop_signals=SIGUSR1,SIGKILL", "stop_signals: 'SIGKILL' is not one of SIGUSR1, SIGUSR2, SIGTERM"),
        ("name=a/b", "name: 'a/b' must be"),
        ("data.path=", "data.path: empty"),
        ("checkpoint.keep=0", "checkpoint.keep: 0 must be >= 1"),
        ("peak_tflops=0", "peak_tflops: 0.0 must be > 0.0"),
    ],
)
def test_impossible_values_name_the_key_and_the_value(override, expected):
    message = error_of("tiny", [override])
    assert message.startswith("tiny.toml with overrides: ")
    assert expected in message


def test_errors_in_a_file_name_the_file(tmp_path):
    path = write(tmp_path, "seq_len = 32\nstep = 10\n" + MODEL)
    assert error_of(path).startswith(f"{path}: unknown key 'step' (did you mean 'steps'?")
    path = write(tmp_path, "seq_len = 32\n" + MODEL + "n_head = 4\n")
    message = error_of(path)
    assert "unknown key 'model.n_head' (did you mean 'model.n_heads'?" in message
    assert "known: model.vocab_size, model.dim" in message
    path = write(tmp_path, "seq_len = 32\n[optimizer]\nlr = 1\n" + MODEL)
    assert "unknown key 'optimizer'" in error_of(path)
    path = write(tmp_path, "seq_len = 32\nmodel = 3\n")
    assert error_of(path) == f"{path}: model: must be a table [model], not a value"
    path = write(tmp_path, "seq_len = 32\n" + MODEL.replace("dim = 64", 'dim = "64"'))
    assert error_of(path) == f"{path}: model.dim: '64' is not int"
    path = write(tmp_path, "seq_len = 32\n" + MODEL.replace("dim = 64", "dim = 64.0"))
    assert error_of(path) == f"{path}: model.dim: '64.0' is not int"
    path = write(tmp_path, "seq_len = 32\ncompile = 1\n" + MODEL)
    assert error_of(path) == f"{path}: compile: '1' is not bool"
    path = write(tmp_path, 'seq_len = 32\nstop_signals = "SIGTERM"\n' + MODEL)
    assert error_of(path) == f"{path}: stop_signals: 'SIGTERM' is not list of str"
    path = write(tmp_path, "seq_len = 32\nlr = nan\n" + MODEL)
    assert error_of(path) == f"{path}: lr: nan is not a finite number"
    path = write(tmp_path, MODEL)
    assert (
        error_of(path)
        == f"{path}: missing key 'seq_len' (tokens per training sequence; <= model.max_seq_len)"
    )
    path = write(tmp_path, "seq_len = 32\n" + MODEL.replace("ffn_dim = 176\n", ""))
    assert error_of(path).startswith(f"{path}: missing key 'model.ffn_dim'")


def test_files_that_cannot_be_read(tmp_path):
    assert error_of("no-such-config") == (
        "config 'no-such-config': no such file and not a shipped config"
        " (125m, 1b, 8b, finetune-apertus, finetune-llama, tiny)"
    )
    assert "cannot read" in error_of(str(tmp_path / "missing.toml"))
    assert "a directory, not a regular file" in error_of(str(tmp_path))
    path = write(tmp_path, "seq_len = = 3\n")
    assert error_of(path).startswith(f"{path}: TOML syntax: ")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')
    assert error_of(str(bad)) == f"{bad}: not UTF-8 text (byte 11)"


def test_world_size_must_split_the_batch_into_whole_micro_batches():
    cfg = load_config("tiny", ["global_batch=8", "micro_batch=2"])
    assert [grad_accum_steps(cfg, w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(
        InputError, match=r"global_batch: 8 is not a multiple of micro_batch 2 x world size 3 \(= 6\)"
    ):
        check_world(cfg, 3)
    with pytest.raises(InputError):
        check_world(cfg, 8)


def test_config_hash_covers_what_a_resume_must_keep():
    base = config_hash(load_config("tiny", []))
    assert config_hash(load_config("tiny", [])) == base
    for same in (
        "steps=99",
        "lr=1e-2",
        "checkpoint.dir=/x",
        "log_interval=3",
        "micro_batch=2",
        "compile=true",
    ):
        assert config_hash(load_config("tiny", [same])) == base, same
    for changed in (
        "model.n_layers=3",
        "data.seed=1",
        "data.path=/d",
        "seed=5",
        "seq_len=32",
        "global_batch=16",
    ):
        assert config_hash(load_config("tiny", [changed])) != base, changed


def test_learning_rate_warms_up_then_decays_to_min_lr():
    cfg = load_config("tiny", ["steps=100", "warmup_steps=10", "lr=1e-3", "min_lr=1e-4"])
    lrs = [learning_rate(cfg, s) for s in range(1, 101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    assert all(a > b for a, b in zip(lrs[9:-1], lrs[10:], strict=True))
    assert lrs[-1] == pytest.approx(1e-4)
    no_warmup = load_config("tiny", ["warmup_steps=0", "steps=10"])
    assert learning_rate(no_warmup, 1) <= no_warmup.lr


def test_every_field_is_documented_once_on_one_line():
    rows = key_docs()
    keys = [row[0] for row in rows]
    tables = {"model": ModelConfig, "data": DataConfig, "checkpoint": CheckpointConfig}
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in tables]
    fields += [f"{name}.{f.name}" for name, cls in tables.items() for f in dataclasses.fields(cls)]
    assert keys == fields
    for key, type_name, default, doc in rows:
        assert doc and doc.isprintable() and "|" not in doc, key
        assert type_name and default, key


def readme_rows() -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in README.read_text().splitlines():
        m = re.fullmatch(r"\| `([a-z0-9_.]+)` \| (.+?) \| `(.+?)` \| (.+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return rows


def test_readme_documents_exactly_the_keys_of_the_code():
    documented = readme_rows()
    code = {key: (t, d, doc) for key, t, d, doc in key_docs()}
    regenerate = "regenerate with: python -c 'from cordee.train.config import *; print(key_table_markdown())'"
    assert sorted(code.keys() - documented.keys()) == [], f"keys missing in the README; {regenerate}"
    assert sorted(documented.keys() - code.keys()) == [], f"README keys that the code lacks; {regenerate}"
    for key, row in code.items():
        assert documented[key] == row, f"{key}: README says {documented[key]}, code {row}; {regenerate}"
    assert key_table_markdown() in README.read_text()


def test_pre_training_hash_is_that_of_the_model_keys_before_fine_tuning():
    # the keys fine-tuning added stay out of the hash at their defaults: old checkpoints resume
    import hashlib
    import json

    cfg = load_config("tiny")
    before = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len")
    before += ("rope_theta", "norm_eps")
    fixed = {
        "model": {k: getattr(cfg.model, k) for k in before},
        "data": dataclasses.asdict(cfg.data),
        "seq_len": cfg.seq_len,
        "global_batch": cfg.global_batch,
        "seed": cfg.seed,
    }
    assert config_hash(cfg) == hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(load_config("tiny", ["model.arch=apertus"])) != config_hash(cfg)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.head_dim=7"], "model.head_dim: 7: rotary embeddings need an even head size"),
        (["model.dim=66", "model.head_dim=16"], None),  # an explicit head size need not divide dim
        (["model.arch=gpt2"], "model.arch: 'gpt2' is not one of llama, apertus"),
        (
            ["model.rope_scaling=llama3", "model.rope_low_freq_factor=4"],
            "model.rope_low_freq_factor: 4.0 must be below model.rope_high_freq_factor 4.0",
        ),
        (["model.from_hf=/nonexistent/model"], "model.from_hf '/nonexistent/model': does not exist"),
    ],
)
def test_model_variant_keys_are_checked(overrides, expected):
    if expected is None:
        assert load_config("tiny", overrides).model.head_size == 16
    else:
        assert expected in error_of("tiny", overrides)
