"""Reading a trainer config: the TOML file (a path or a shipped name from `configs/`), `key=value`
overrides read by each key's type, the model shape filled from a Hugging Face `config.json`, and
every check that runs before anything starts (types, ranges and choices from each key's rules,
then the relations between keys). Every error is one InputError line naming the file or override,
the key and the value. Kept apart from config.py (the keys themselves), which `cordee train --help`,
the README's key table and the resume hash need without any of this.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from pathlib import Path

from cordee.errors import InputError, one_line, shown
from cordee.fileio import ReadError, read_bounded
from cordee.numbers import as_int
from cordee.train.config import SECTIONS, ModelConfig, TrainConfig, key_schema, toml_value, type_name

CONFIGS_DIR = Path(__file__).with_name("configs")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


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
        raise InputError(f"{where}: {key}: {shown(value)} is not {type_name(tp)}")
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
        raise InputError(f"{where}: {key}: {shown(text)} is not {type_name(tp)}")
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
    schema = key_schema()
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
            given, theirs = (shown(v) if isinstance(v, str) else toml_value(v) for v in (flat[key], value))
            raise InputError(
                f"{where}: {key} = {given} but model.from_hf {shown(path)} has {theirs}"
                f" (leave {key} out to take the model's)"
            )
        flat[key] = value
