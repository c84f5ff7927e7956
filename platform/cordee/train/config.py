"""The trainer's configuration: typed dataclasses read from TOML, `key=value` overrides, validation
before anything starts, and one doc string per key (it drives `cordee train --help` and the
README's key table, so the two cannot drift).

A config file has top-level keys for the run and the tables [model], [data] and [checkpoint].
Shipped configs (`tiny`, `125m`, `1b`, `8b`) live in `configs/` beside this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from cordee.errors import InputError, one_line, shown
from cordee.fileio import ReadError, read_bounded
from cordee.numbers import as_int

CONFIGS_DIR = Path(__file__).with_name("configs")
SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT")
MAX_SEED = 2**63 - 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


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


def _schema() -> dict[str, tuple[dataclasses.Field, object]]:
    """Every dotted key -> (field, type), top-level keys first, then each table."""
    keys = {f.name: (f, t) for f, t in _fields(TrainConfig) if f.name not in SECTIONS}
    for section, cls in SECTIONS.items():
        keys |= {f"{section}.{f.name}": (f, t) for f, t in _fields(cls)}
    return keys


def _type_name(tp) -> str:
    names = {int: "int", float: "float", bool: "bool", str: "str", tuple[str, ...]: "list of str"}
    return names.get(tp, 'float or "auto"')


def _toml_value(value) -> str:
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
    for key, (f, tp) in _schema().items():
        if f.default is not dataclasses.MISSING:
            default = _toml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _toml_value(f.default_factory())
        else:
            default = "required"
        rows.append((key, _type_name(tp), default, f.metadata["doc"]))
    return rows


def key_table_markdown() -> str:
    """The README's table of keys."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | `{d}` | {doc} |" for k, t, d, doc in key_docs()]
    return "\n".join(lines) + "\n"


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.toml"))


def _read_source(source: str) -> tuple[str, dict]:
    import tomllib  # deferred: `cordee train --help` only needs key_docs()

    if os.path.exists(source) or os.sep in source or source.endswith(".toml"):
        path, label = source, source
    elif source in shipped_configs():
        path, label = str(CONFIGS_DIR / f"{source}.toml"), f"{source}.toml"
    else:
        known = ", ".join(shipped_configs())
        raise InputError(f"config {shown(source)}: no such file and not a shipped config ({known})")
    try:
        return label, tomllib.loads(read_bounded(path).decode("utf-8"))
    except ReadError as e:
        raise InputError(f"config {shown(path)}: {e.reason}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{label}: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:  # its message carries line and column
        raise InputError(f"{label}: TOML syntax: {one_line(str(e))}") from None
    except ValueError as e:  # tomllib's int() of more than 4,300 digits
        raise InputError(f"{label}: TOML value cordee cannot read: {one_line(str(e))[:120]}") from None
    except RecursionError:
        raise InputError(f"{label}: TOML nested too deeply") from None


def _unknown(where: str, key: str, schema: dict) -> InputError:
    if key in SECTIONS:  # `model=1`: a table given a value
        keys = ", ".join(k for k in schema if k.startswith(key + "."))
        return InputError(f"{where}: {shown(key)} is a table, not a value: set its keys ({keys})")
    if key in schema:  # `dim = {a = 1}`: a value given a table
        return InputError(f"{where}: {shown(key)} takes a value, not a table")
    section = key.rpartition(".")[0]
    while section and section not in SECTIONS and section not in schema:
        section = section.rpartition(".")[0]
    if section in schema:  # `model.dim.x=1`: below a value
        return InputError(f"{where}: unknown key {shown(key)} ({section!r} takes a value, not keys)")
    known = [k for k in schema if k.rpartition(".")[0] == section] + (list(SECTIONS) if not section else [])
    close = [c for c in difflib.get_close_matches(key, list(schema) + list(SECTIONS), n=2) if c != key]
    hint = f"did you mean '{close[0]}'? " if close else ""
    return InputError(f"{where}: unknown key {shown(key)} ({hint}known: {', '.join(known)})")


def _flatten(label: str, data: dict, schema: dict) -> dict[str, object]:
    flat: dict[str, object] = {}
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise InputError(f"{label}: {name}: must be a table [{name}], not a value")
            for sub, subvalue in value.items():
                key = f"{name}.{sub}"
                if key not in schema or isinstance(subvalue, dict):
                    raise _unknown(label, key, schema)
                flat[key] = subvalue
        elif name in schema and not isinstance(value, dict):
            flat[name] = value
        else:
            raise _unknown(label, name, schema)
    return flat


def _toml_checked(where: str, key: str, tp, value):
    """A TOML value checked against the field's type (ints are floats too, nothing else converts)."""
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
        tuple[str, ...]: isinstance(value, list) and all(isinstance(v, str) for v in value),
    }.get(tp)
    if tp not in (int, float, bool, str, tuple[str, ...]):  # float | None
        if value == "auto":
            return None
        ok, tp = isinstance(value, int | float) and not isinstance(value, bool), float
    if not ok:
        raise InputError(f"{where}: {key}: {shown(value)} is not {_type_name(tp)}")
    if tp is float and not math.isfinite(value):
        raise InputError(f"{where}: {key}: {value} is not a finite number")
    return tuple(value) if tp == tuple[str, ...] else (float(value) if tp is float else value)


def _as_float(text: str) -> float | None:
    """Decimal notation only: float() would also take "nan", "inf", "1_0" and other scripts' digits."""
    if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?", text, re.ASCII):
        return None
    return float(text)


def _parse_override(item: str, schema: dict) -> tuple[str, object]:
    """`key=value` with the value read as the key's type: ints in ASCII digits, floats finite,
    bools true/false, lists comma-separated, "auto" for an optional float."""
    where = f"override {shown(item)}"
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise InputError(f"{where}: expected key=value (e.g. model.n_layers=4)")
    if key not in schema:
        raise _unknown(where, key, schema)
    tp = schema[key][1]
    text = text.strip()
    value: object
    if tp is int:
        value = as_int(text)
    elif tp is bool:
        value = {"true": True, "false": False}.get(text.lower())
    elif tp is str:
        value = text
    elif tp == tuple[str, ...]:
        value = [v.strip() for v in text.split(",") if v.strip()]
    elif tp is not float and text.lower() == "auto":
        value = "auto"
    else:
        value = _as_float(text)
    if value is None:
        raise InputError(f"{where}: {key}: {shown(text)} is not {_type_name(tp)}")
    return key, _toml_checked(where, key, tp, value)


def _check_rules(where: str, key: str, f: dataclasses.Field, value) -> None:
    rules = f.metadata
    for item in value if isinstance(value, tuple) else (value,):
        if item is None:
            continue
        if "choices" in rules and item not in rules["choices"]:
            raise InputError(f"{where}: {key}: {shown(item)} is not one of {', '.join(rules['choices'])}")
        if "lo" in rules and item < rules["lo"]:
            raise InputError(f"{where}: {key}: {item} must be >= {rules['lo']}")
        if "hi" in rules and item > rules["hi"]:
            raise InputError(f"{where}: {key}: {item} must be <= {rules['hi']}")
        if "gt" in rules and not item > rules["gt"]:
            raise InputError(f"{where}: {key}: {item} must be > {rules['gt']}")
        if "lt" in rules and not item < rules["lt"]:
            raise InputError(f"{where}: {key}: {item} must be < {rules['lt']}")


def _check_relations(where: str, cfg: TrainConfig) -> None:
    m, head = cfg.model, cfg.model.dim // cfg.model.n_heads
    problems = [
        (
            not m.head_dim and m.dim % m.n_heads,
            f"model.n_heads: {m.n_heads} does not divide model.dim {m.dim}",
        ),
        (
            m.n_heads % m.n_kv_heads,
            f"model.n_kv_heads: {m.n_kv_heads} does not divide model.n_heads {m.n_heads}",
        ),
        (
            not m.head_dim and head % 2,
            f"model.dim / model.n_heads = {head}: rotary embeddings need an even head size",
        ),
        (m.head_dim % 2, f"model.head_dim: {m.head_dim}: rotary embeddings need an even head size"),
        (
            m.rope_scaling == "llama3" and m.rope_low_freq_factor >= m.rope_high_freq_factor,
            f"model.rope_low_freq_factor: {m.rope_low_freq_factor} must be below model.rope_high_freq_factor"
            f" {m.rope_high_freq_factor}",
        ),
        (
            cfg.seq_len > m.max_seq_len,
            f"seq_len: {cfg.seq_len} is longer than model.max_seq_len {m.max_seq_len}",
        ),
        (
            cfg.global_batch % cfg.micro_batch,
            f"micro_batch: {cfg.micro_batch} does not divide global_batch {cfg.global_batch}",
        ),
        (cfg.min_lr > cfg.lr, f"min_lr: {cfg.min_lr} is above lr {cfg.lr}"),
        (not _NAME.fullmatch(cfg.name), f"name: {shown(cfg.name)} must be 1-64 of letters, digits, . _ -"),
        (not cfg.data.path, 'data.path: empty (a shard directory, a shard file or "synthetic")'),
    ]
    for failed, message in problems:
        if failed:
            raise InputError(f"{where}: {message}")


def load_config(source: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The validated config from a TOML file or a shipped name, with `key=value` overrides applied
    (they win over the file). InputError, one line naming the file or override, key and value."""
    schema = _schema()
    label, data = _read_source(source)
    flat = {
        key: _toml_checked(label, key, schema[key][1], v) for key, v in _flatten(label, data, schema).items()
    }
    flat |= dict(_parse_override(item, schema) for item in overrides)
    where = f"{label} with overrides" if overrides else label
    if flat.get("model.from_hf"):
        _fill_from_hf(where, flat)
    elif not any(k in flat for k in _SHAPE_KEYS):  # a fine-tuning config: the shape is the model's
        raise InputError(
            f"{where}: needs model.from_hf=DIR (a Hugging Face model directory) or the model's shape"
            f" ({', '.join(_SHAPE_KEYS)})"
        )
    values: dict[str, dict] = {"": {}, **{s: {} for s in SECTIONS}}
    for key, (f, _) in schema.items():
        section, _, name = key.rpartition(".")
        if key in flat:
            _check_rules(where, key, f, flat[key])
            values[section][name] = flat[key]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = " or model.from_hf=DIR (a Hugging Face model)" if key.startswith("model.") else ""
            raise InputError(f"{where}: missing key {shown(key)} ({f.metadata['doc']}){hint}")
    parts = {s: cls(**values[s]) for s, cls in SECTIONS.items()}
    cfg = TrainConfig(**values[""], **parts)
    _check_relations(where, cfg)
    return cfg


_SHAPE_KEYS = tuple(
    f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.default is dataclasses.MISSING
)


def _fill_from_hf(where: str, flat: dict) -> None:
    """The model keys read from model.from_hf's config.json, into `flat`; a key the file or an
    override also sets must agree with it (a silent override would build another model)."""
    from cordee.train.hfconfig import model_fields  # deferred: only fine-tuning reads config.json

    path = flat["model.from_hf"]
    for name, value in model_fields(path).items():
        key = f"model.{name}"
        if key in flat and flat[key] != value:
            given, theirs = (shown(v) if isinstance(v, str) else _toml_value(v) for v in (flat[key], value))
            raise InputError(
                f"{where}: {key} = {given} but model.from_hf {shown(path)} has {theirs}"
                f" (leave {key} out to take the model's)"
            )
        flat[key] = value


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
