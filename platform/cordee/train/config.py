"""The trainer's configuration keys: typed dataclasses, one doc string and the rules (ranges,
choices) per key, and what follows from a loaded config (batch split, learning-rate schedule, the
hash a resume must match). The docs drive `cordee train --help` and the README's key table, so the
two cannot drift; reading TOML files and overrides and validating them is in configload.py.

A config file has top-level keys for the run and the tables [model], [data] and [checkpoint].
Shipped configs (`tiny`, `125m`, `1b`, `8b`) live in `configs/` beside this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field

from cordee.errors import InputError

SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT")
MAX_SEED = 2**63 - 1


def _key(doc: str, default=dataclasses.MISSING, *, factory=dataclasses.MISSING, **rules):
    """A field with its one-line doc and its rules: lo/hi (inclusive), gt/lt (exclusive), choices."""
    return field(default=default, default_factory=factory, metadata={"doc": doc, **rules})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    vocab_size: int = _key("vocabulary size (embedding and output rows); >= the tokenizer's", lo=2, hi=2**32)
    dim: int = _key("hidden size (model width)", lo=1, hi=65536)
    n_layers: int = _key("number of transformer blocks", lo=1, hi=1024)
    n_heads: int = _key(
        "attention heads; must divide dim unless head_dim is set, head size must be even", lo=1, hi=1024
    )
    n_kv_heads: int = _key("key/value heads (grouped-query attention); must divide n_heads", lo=1, hi=1024)
    ffn_dim: int = _key("hidden size of the feed-forward (SwiGLU or xIELU MLP)", lo=1, hi=1 << 20)
    max_seq_len: int = _key(
        "longest sequence the model is built for (seq_len must not exceed it)", lo=1, hi=1 << 20
    )
    rope_theta: float = _key("rotary embedding base", 10000.0, gt=0.0)
    norm_eps: float = _key("RMSNorm epsilon", 1e-5, gt=0.0, lt=1.0)
    from_hf: str = _key(
        'Hugging Face model directory to start from (shape: config.json, weights: safetensors); "" = none',
        "",
    )
    arch: str = _key(
        '"llama" (SwiGLU) or "apertus" (q/k RMSNorm per head, xIELU MLP)',
        "llama",
        choices=("llama", "apertus"),
    )
    head_dim: int = _key("size of one attention head; 0 = dim / n_heads", 0, lo=0, hi=65536)
    tie_embeddings: bool = _key("the output projection reuses the input embedding's weight", False)
    rope_scaling: str = _key(
        '"none" or "llama3" (Llama 3.1 frequency scaling by the rope_* keys)',
        "none",
        choices=("none", "llama3"),
    )
    rope_factor: float = _key("llama3 scaling: low frequencies divided by this", 8.0, gt=0.0, hi=1e6)
    rope_low_freq_factor: float = _key(
        "llama3 scaling: wavelengths above original/this are scaled", 1.0, gt=0.0, hi=1e6
    )
    rope_high_freq_factor: float = _key(
        "llama3 scaling: wavelengths below original/this are kept", 4.0, gt=0.0, hi=1e6
    )
    rope_original_max_len: int = _key(
        "llama3 scaling: the context length of pre-training", 8192, lo=1, hi=1 << 24
    )

    @property
    def head_size(self) -> int:
        """The size of one attention head: head_dim, or dim / n_heads when head_dim is 0."""
        return self.head_dim or self.dim // self.n_heads


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    path: str = _key(
        'directory of token shards, one shard file, or "synthetic" (a learnable task)', "synthetic"
    )
    seed: int = _key(
        "seed of the global sample order (a pure function of seed and step)", 1234, lo=0, hi=MAX_SEED
    )


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    dir: str = _key('checkpoint directory; "" = no checkpoints', "")
    interval: int = _key("steps between checkpoints", 100, lo=1, hi=10**9)
    keep: int = _key("complete checkpoints kept (older ones are deleted)", 2, lo=1, hi=1000)
    async_save: bool = _key("save in the background while training goes on", True)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    name: str = _key("run name (letters, digits, . _ -), shown in logs", "train")
    model: ModelConfig = _key("model shape")
    data: DataConfig = _key("training data", factory=DataConfig)
    checkpoint: CheckpointConfig = _key("checkpoints", factory=CheckpointConfig)
    seq_len: int = _key("tokens per training sequence; <= model.max_seq_len", lo=1, hi=1 << 20)
    global_batch: int = _key("sequences per optimizer step, across all ranks", 8, lo=1, hi=1 << 24)
    micro_batch: int = _key(
        "sequences per rank per forward; the rest is gradient accumulation", 1, lo=1, hi=1 << 24
    )
    steps: int = _key("optimizer steps of the whole run", 1000, lo=1, hi=10**9)
    lr: float = _key("peak learning rate (AdamW), reached after warmup_steps", 3e-4, gt=0.0, lt=10.0)
    min_lr: float = _key("learning rate at the last step (cosine decay from lr)", 3e-5, lo=0.0)
    warmup_steps: int = _key("steps of linear warmup from 0 to lr", 100, lo=0, hi=10**9)
    weight_decay: float = _key("AdamW weight decay", 0.1, lo=0.0, lt=1.0)
    beta1: float = _key("AdamW beta1", 0.9, lo=0.0, lt=1.0)
    beta2: float = _key("AdamW beta2", 0.95, lo=0.0, lt=1.0)
    grad_clip: float = _key("clip the global gradient norm to this; 0 = no clipping", 1.0, lo=0.0)
    seed: int = _key("seed of the weight initialization and of the RNG", 0, lo=0, hi=MAX_SEED)
    precision: str = _key(
        '"bf16" (bf16 compute, fp32 master weights and reduction) or "fp32"', "bf16", choices=("bf16", "fp32")
    )
    compile: bool = _key("torch.compile each block", False)
    activation_checkpointing: bool = _key("recompute each block's activations in backward", False)
    device: str = _key('"auto" (cuda when present), "cuda" or "cpu"', "auto", choices=("auto", "cuda", "cpu"))
    stop_signals: tuple[str, ...] = _key(
        "signals that stop the run after the step with a checkpoint", SIGNALS[:3], choices=SIGNALS
    )
    metrics_file: str = _key('JSONL file of per-step metrics (rank 0 writes); "" = none', "")
    log_interval: int = _key("steps between console lines", 10, lo=1, hi=10**9)
    peak_tflops: float | None = _key(
        'peak dense bf16 TFLOP/s per GPU for MFU; "auto" = by GPU model', None, gt=0.0, hi=1e6
    )


SECTIONS = {"model": ModelConfig, "data": DataConfig, "checkpoint": CheckpointConfig}


def _fields(cls) -> list[tuple[dataclasses.Field, object]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def key_schema() -> dict[str, tuple[dataclasses.Field, object]]:
    """Every dotted key -> (field, type), top-level keys first, then each table."""
    keys = {f.name: (f, t) for f, t in _fields(TrainConfig) if f.name not in SECTIONS}
    for section, cls in SECTIONS.items():
        keys |= {f"{section}.{f.name}": (f, t) for f, t in _fields(cls)}
    return keys


def type_name(tp) -> str:
    """A key's type as docs and error messages name it."""
    names = {int: "int", float: "float", bool: "bool", str: "str", tuple[str, ...]: "list of str"}
    return names.get(tp, 'float or "auto"')


def toml_value(value) -> str:
    """A value as TOML spells it (None, an optional float left to cordee, is "auto")."""
    if value is None:
        return '"auto"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return repr(value)


def key_docs() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, one-line doc) for every key: `cordee train --help`, the README."""
    rows = []
    for key, (f, tp) in key_schema().items():
        if f.default is not dataclasses.MISSING:
            default = toml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = toml_value(f.default_factory())
        else:
            default = "required"
        rows.append((key, type_name(tp), default, f.metadata["doc"]))
    return rows


def key_table_markdown() -> str:
    """The README's table of keys."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | `{d}` | {doc} |" for k, t, d, doc in key_docs()]
    return "\n".join(lines) + "\n"


def check_world(cfg: TrainConfig, world_size: int) -> None:
    """The checks that need the number of ranks: every rank runs whole micro batches."""
    per_step = cfg.micro_batch * world_size
    if world_size < 1 or cfg.global_batch % per_step:
        raise InputError(
            f"global_batch: {cfg.global_batch} is not a multiple of micro_batch {cfg.micro_batch}"
            f" x world size {world_size} (= {per_step}); choose global_batch or micro_batch to fit"
        )


def grad_accum_steps(cfg: TrainConfig, world_size: int) -> int:
    check_world(cfg, world_size)
    return cfg.global_batch // (cfg.micro_batch * world_size)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (1-based): linear warmup to lr over warmup_steps,
    then cosine decay to min_lr at the last step."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def config_hash(cfg: TrainConfig) -> str:
    """A hash of what must not change across a resume: the model shape, the data (path, order seed,
    sequence length, global batch: together they fix which samples step k reads) and the seed."""
    fixed = {
        "model": _model_identity(cfg.model),
        "data": dataclasses.asdict(cfg.data),
        "seq_len": cfg.seq_len,
        "global_batch": cfg.global_batch,
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]


# keys that came after the first checkpoints: left out of the hash at their default, so that a
# pre-training run's hash (and its checkpoints' resume) is what it was before they existed
_LATER_KEYS = ("arch", "head_dim", "tie_embeddings", "rope_scaling", "rope_factor", "rope_low_freq_factor",
               "rope_high_freq_factor", "rope_original_max_len")  # fmt: skip


def _model_identity(m: ModelConfig) -> dict:
    """The model fields a resume must keep. Not from_hf: the weights then come from the
    checkpoint, and the Hugging Face directory may move between the jobs of a chain."""
    defaults = ModelConfig(vocab_size=2, dim=1, n_layers=1, n_heads=1, n_kv_heads=1, ffn_dim=1, max_seq_len=1)
    fields = dataclasses.asdict(m)
    del fields["from_hf"]
    return {k: v for k, v in fields.items() if k not in _LATER_KEYS or v != getattr(defaults, k)}
