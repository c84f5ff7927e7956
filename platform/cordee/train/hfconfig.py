"""Hugging Face model directories <-> cordee's model config and parameter names.

`model_fields` reads a directory's config.json (Llama and Apertus, as `transformers` writes them:
`rope_parameters` since transformers 5, `rope_theta` + `rope_scaling` before) into ModelConfig
keys; `hf_config` writes one back for an export; `hf_names` maps each cordee parameter (and each
saved buffer) to its tensor name in the checkpoint. What cordee cannot build (biases, other
activations, other rotary scalings) is refused naming the config.json field. No torch here: the
config is checked before anything heavy is imported.
"""

from __future__ import annotations

import math
import os

from cordee.errors import InputError, shown
from cordee.fileio import read_json

SUPPORTED = ("llama", "apertus")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "apertus": "ApertusForCausalLM"}
ACTIVATIONS = {"llama": "silu", "apertus": "xielu"}
# the values transformers' config classes take when config.json leaves a field out
_DEFAULT_EPS = {"llama": 1e-6, "apertus": 1e-5}
_DEFAULT_THETA = {"llama": 10000.0, "apertus": 12000000.0}
_APERTUS_ROPE = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}
_APERTUS_ROPE |= {"low_freq_factor": 1.0, "high_freq_factor": 4.0}
MAX_CONFIG_BYTES = 4 << 20


def config_path(model_dir: str) -> str:
    return os.path.join(model_dir, "config.json")


def read_hf_config(model_dir: str) -> dict:
    """config.json of a model directory, parsed (bounded read); one-line InputError otherwise."""
    if not os.path.isdir(model_dir):
        what = "does not exist" if not os.path.lexists(model_dir) else "is not a directory"
        raise InputError(f"model.from_hf {shown(model_dir)}: {what} (a Hugging Face model directory)")
    path = config_path(model_dir)
    if not os.path.lexists(path):
        raise InputError(f"model.from_hf {shown(model_dir)}: no config.json (a Hugging Face model directory)")
    data = read_json(path, "config.json", MAX_CONFIG_BYTES)
    if not isinstance(data, dict):
        raise InputError(f"{shown(path)}: config.json is not a JSON object")
    return data


def _finite(value: int | float) -> bool:
    """float() holds it: not NaN, not infinite, not an integer beyond float's range (10**400)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _field(path: str, data: dict, name: str, kind, default=None, *, lo=None):
    value = data.get(name, default)
    if value is None:
        raise InputError(f"{shown(path)}: {name} is missing")
    if kind is bool:
        ok = isinstance(value, bool)
    else:  # JSON has no separate float: an integer is a number too
        allowed = int | float if kind is float else kind
        ok = isinstance(value, allowed) and not isinstance(value, bool)
    if kind is float and ok and not _finite(value):
        ok = False
    if not ok or (lo is not None and value < lo):
        need = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}[kind]
        bound = f" >= {lo}" if lo is not None else ""
        raise InputError(f"{shown(path)}: {name} = {shown(value)} is not {need}{bound}")
    return float(value) if kind is float else value


def _rope(path: str, data: dict, model_type: str) -> dict:
    """rope_parameters (transformers 5) or rope_scaling + rope_theta (transformers 4)."""
    params = data.get("rope_parameters") or data.get("rope_scaling")
    if params is None and model_type == "apertus" and "rope_theta" not in data:
        params = dict(_APERTUS_ROPE)  # ApertusConfig's default: Llama 3.1 scaling
    params = params or {}
    field = "rope_parameters" if data.get("rope_parameters") else "rope_scaling"
    if not isinstance(params, dict):
        raise InputError(f"{shown(path)}: {field} = {shown(params)} is not an object")
    where = dict(params)
    where.setdefault("rope_theta", data.get("rope_theta", _DEFAULT_THETA[model_type]))
    kind = where.get("rope_type", where.get("type", "default"))
    if where.get("partial_rotary_factor", 1.0) != 1.0:
        raise InputError(f"{shown(path)}: {field}.partial_rotary_factor: cordee rotates whole heads only")
    theta = _field(path, where, "rope_theta", float)
    if theta <= 0:
        raise InputError(f"{shown(path)}: rope_theta = {theta} must be > 0")
    if kind == "default":
        return {"rope_theta": theta, "rope_scaling": "none"}
    if kind != "llama3":
        raise InputError(
            f"{shown(path)}: {field}.rope_type = {shown(kind)} is not supported (default, llama3)"
        )
    # transformers falls back to max_position_embeddings for the pre-training length
    where.setdefault("original_max_position_embeddings", data.get("max_position_embeddings"))
    return {
        "rope_theta": theta,
        "rope_scaling": "llama3",
        "rope_factor": _field(path, where, "factor", float),
        "rope_low_freq_factor": _field(path, where, "low_freq_factor", float),
        "rope_high_freq_factor": _field(path, where, "high_freq_factor", float),
        "rope_original_max_len": _field(path, where, "original_max_position_embeddings", int, lo=1),
    }


def model_fields(model_dir: str) -> dict:
    """ModelConfig keyword values (arch, shape, rotary, norm, tying) from the directory's
    config.json. InputError naming the field for what cordee does not build."""
    data = read_hf_config(model_dir)
    path = config_path(model_dir)
    model_type = data.get("model_type")
    if model_type not in SUPPORTED:
        raise InputError(
            f"{shown(path)}: model_type = {shown(model_type)} is not supported ({', '.join(SUPPORTED)})"
        )
    act = data.get("hidden_act", ACTIVATIONS[model_type])
    if act != ACTIVATIONS[model_type]:
        raise InputError(
            f"{shown(path)}: hidden_act = {shown(act)}: {model_type} in cordee uses {ACTIVATIONS[model_type]}"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if data.get(flag):
            raise InputError(f"{shown(path)}: {flag} = true: cordee's layers have no biases")
    heads = _field(path, data, "num_attention_heads", int, lo=1)
    dim = _field(path, data, "hidden_size", int, lo=1)
    head_dim = data.get("head_dim")
    head_dim = 0 if head_dim is None else _field(path, data, "head_dim", int, lo=1)
    fields = {
        "arch": model_type,
        "vocab_size": _field(path, data, "vocab_size", int, lo=1),
        "dim": dim,
        "n_layers": _field(path, data, "num_hidden_layers", int, lo=1),
        "n_heads": heads,
        "n_kv_heads": _field(path, data, "num_key_value_heads", int, heads, lo=1),
        "ffn_dim": _field(path, data, "intermediate_size", int, lo=1),
        "max_seq_len": _field(path, data, "max_position_embeddings", int, lo=1),
        "norm_eps": _field(path, data, "rms_norm_eps", float, _DEFAULT_EPS[model_type]),
        # explicit only where it differs: a Llama config.json names it even when it is dim / heads
        "head_dim": 0 if head_dim * heads == dim else head_dim,
        "tie_embeddings": _field(path, data, "tie_word_embeddings", bool, False),
    }
    return fields | _rope(path, data, model_type)


def hf_config(cfg, base: dict | None = None) -> dict:
    """config.json for a model of ModelConfig `cfg`: `base` (the source model's config.json) kept
    where cordee has no say (token ids, generation defaults), every field of the model's shape
    written from `cfg`, with the rotary settings in both transformers 5's form (rope_parameters)
    and transformers 4's (rope_theta, rope_scaling)."""
    out = {k: v for k, v in (base or {}).items() if k not in ("quantization_config", "auto_map")}
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    legacy = None
    if cfg.rope_scaling == "llama3":
        legacy = {
            "rope_type": "llama3",
            "factor": cfg.rope_factor,
            "low_freq_factor": cfg.rope_low_freq_factor,
            "high_freq_factor": cfg.rope_high_freq_factor,
            "original_max_position_embeddings": cfg.rope_original_max_len,
        }
        rope |= legacy
    out |= {
        "architectures": [ARCHITECTURES[cfg.arch]],
        "model_type": cfg.arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_size,
        "hidden_act": ACTIVATIONS[cfg.arch],
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "rope_parameters": rope,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": legacy,
    }
    if cfg.arch == "llama":
        out["mlp_bias"] = False
    return out


def hf_names(cfg) -> dict[str, str]:
    """Every cordee parameter and saved buffer of Transformer(cfg) -> its Hugging Face tensor name.
    A tied model has no output projection and its checkpoint no lm_head."""
    names = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not cfg.tie_embeddings:
        names["output.weight"] = "lm_head.weight"
    apertus = cfg.arch == "apertus"
    per_layer = {
        "attention.wq.weight": "self_attn.q_proj.weight",
        "attention.wk.weight": "self_attn.k_proj.weight",
        "attention.wv.weight": "self_attn.v_proj.weight",
        "attention.wo.weight": "self_attn.o_proj.weight",
        "attention_norm.weight": "attention_layernorm.weight" if apertus else "input_layernorm.weight",
        "ffn_norm.weight": "feedforward_layernorm.weight" if apertus else "post_attention_layernorm.weight",
        "feed_forward.w3.weight": "mlp.up_proj.weight",
        "feed_forward.w2.weight": "mlp.down_proj.weight",
    }
    if apertus:
        per_layer |= {
            "attention.q_norm.weight": "self_attn.q_norm.weight",
            "attention.k_norm.weight": "self_attn.k_norm.weight",
        }
        per_layer |= {
            f"feed_forward.act.{p}": f"mlp.act_fn.{p}" for p in ("alpha_p", "alpha_n", "beta", "eps")
        }
    else:
        per_layer["feed_forward.w1.weight"] = "mlp.gate_proj.weight"
    for i in range(cfg.n_layers):
        names |= {f"layers.{i}.{ours}": f"model.layers.{i}.{theirs}" for ours, theirs in per_layer.items()}
    return names


def load_hf_weights(model, model_dir: str, cfg, **kwargs) -> dict:
    """Load the directory's safetensors into `model` (plain or FSDP2-sharded): see
    cordee.train.hfload.load_hf_weights."""
    from cordee.train.hfload import load_hf_weights as load

    return load(model, model_dir, cfg, **kwargs)
