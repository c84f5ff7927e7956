"""The reference decoder-only transformer, Llama style: RMSNorm before attention and feed-forward,
rotary position embeddings, SwiGLU, grouped-query attention, untied output projection. The
"apertus" variant (Hugging Face `transformers.models.apertus`) adds an RMSNorm per head on queries
and keys and replaces SwiGLU by up-projection -> xIELU -> down-projection; either may tie the
output projection to the embedding and scale rotary frequencies as Llama 3.1 does. The layers
themselves (RMSNorm, rotary embeddings, xIELU, attention masks) are in layers.py.

Built for FSDP2 and torch.compile: blocks are the units `fully_shard` wraps (`.layers`, each
called as `block(x, positions, mask)`), forward has no data-dependent Python branches, and the
rotary frequencies are non-persistent buffers that `reset_buffers` recomputes (so a model built on
the meta device and materialized with `to_empty` is complete). No dropout: a run is a pure
function of its seeds.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from cordee.train.config import ModelConfig
from cordee.train.layers import (
    XIELU,
    RMSNorm,
    apply_rotary,
    attend,
    rope_frequencies,
    segment_block_mask,
    segment_mask,
)


def num_params(cfg: ModelConfig, embeddings: bool = True) -> int:
    """Parameters of Transformer(cfg), counted from the shape. `embeddings=False` leaves out the
    input embedding and the output projection (one table when they are tied)."""
    head = cfg.head_size
    attention = cfg.dim * head * (cfg.n_heads + 2 * cfg.n_kv_heads) + cfg.n_heads * head * cfg.dim
    if cfg.arch == "apertus":  # q/k norms; up + down projections and xIELU's two alphas
        block = attention + 2 * head + 2 * cfg.dim * cfg.ffn_dim + 2 + 2 * cfg.dim
    else:
        block = attention + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim
    total = cfg.n_layers * block + cfg.dim  # the final norm
    tables = 1 if cfg.tie_embeddings else 2
    return total + (tables * cfg.vocab_size * cfg.dim if embeddings else 0)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Model FLOPs of one training token (forward + backward): 6 x parameters + 12 x layers x
    attention width x seq_len for causal attention (the PaLM paper, appendix B, and llm-foundry's
    convention). Parameters include both embedding tables, as in llm-foundry's count; a tied
    output projection still does its matrix product, so it counts too."""
    params = num_params(cfg) + (cfg.vocab_size * cfg.dim if cfg.tie_embeddings else 0)
    return 6.0 * params + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_size * seq_len


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_size
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)
        self.qk_norm = cfg.arch == "apertus"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps)
        # A buffer of the block, not an input: FSDP2 casts floating-point block inputs to bf16,
        # which would put the angles off by up to 0.4%. Not saved; reset_rotary() rebuilds it.
        self.register_buffer("inv_freq", rope_frequencies(cfg), persistent=False)

    def reset_rotary(self) -> None:
        self.inv_freq = rope_frequencies(self.cfg, device=self.inv_freq.device)

    def forward(self, x: torch.Tensor, positions=None, mask=None) -> torch.Tensor:
        b, t, _ = x.shape
        # cos/sin recomputed every call (T x head_dim/2 values, fused by the compiler): cheaper
        # than a table per block, and exact in fp32 whatever the compute dtype
        if positions is None:
            angles = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), self.inv_freq.float())
        else:
            angles = positions[..., None].float() * self.inv_freq.float()
        cos, sin = angles.cos(), angles.sin()
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, head_dim]
        repeat = self.n_heads // self.n_kv_heads
        if repeat > 1:  # grouped-query: each key/value head serves `repeat` query heads
            k = k.repeat_interleave(repeat, dim=1)
            v = v.repeat_interleave(repeat, dim=1)
        out = attend(q, k, v, mask)
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class XIELUFeedForward(nn.Module):
    """Apertus' MLP: up-projection, xIELU, down-projection (no gate)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down
        self.act = XIELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w3(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        mlp = XIELUFeedForward if cfg.arch == "apertus" else FeedForward
        self.feed_forward = mlp(cfg.dim, cfg.ffn_dim)

    def forward(self, x: torch.Tensor, positions=None, mask=None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), positions, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # tied: no module of its own, forward multiplies by the embedding table, so the state dict
        # has one entry (as Hugging Face's tied checkpoints have no lm_head) and the FSDP2 root,
        # which owns tok_embeddings, holds the one parameter both uses gather
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # packed rows (segments): FlexAttention's block mask instead of a dense boolean one; set by
        # parallel.wrap_model where the blocks are compiled on a GPU (eager flex is slow)
        self.flex_attention = False

    def forward(self, tokens: torch.Tensor, positions=None, segments=None) -> torch.Tensor:
        """tokens [B, T] (T <= max_seq_len) -> logits [B, T, vocab_size]. positions [B, T] int64:
        each token's rotary position (default 0..T-1); segments [B, T] int: attention stays
        inside runs of equal ids (default: one causal sequence, SDPA's fused causal path)."""
        if segments is None:
            mask = None
        else:
            mask = segment_block_mask(segments) if self.flex_attention else segment_mask(segments)
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, positions, mask)
        h = self.norm(h)
        return self.output(h) if self.output is not None else F.linear(h, self.tok_embeddings.weight)

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute what is not a trained parameter (rotary frequencies, xIELU's beta and eps):
        after `to_empty`, before loading weights or without init_weights."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.reset_rotary()
            elif isinstance(module, XIELU):
                module.reset_constants()

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Deterministic initialization: each parameter drawn from its own generator seeded by
        (seed, parameter name), so the weights depend on neither the order of the calls nor the
        number of ranks. Works on a full module, on one materialized from the meta device, and
        after FSDP2 `fully_shard` (each rank draws the whole tensor and keeps its shard).
        Scheme (as in torchtitan's Llama): embeddings N(0, 1); input projections N(0, 0.02);
        projections into the residual stream N(0, 0.02 / sqrt(2 x layers)); the output
        N(0, 1/sqrt(dim)); every normal cut at 3 standard deviations; norms 1. A tied embedding
        is also the output, so it takes the output's N(0, 1/sqrt(dim)); xIELU's alphas take
        transformers' initial values."""
        depth_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        embedding_std = self.cfg.dim**-0.5 if self.cfg.tie_embeddings else 1.0
        stds = {"tok_embeddings": embedding_std, "output": self.cfg.dim**-0.5}
        stds |= {"wo": depth_std, "w2": depth_std}
        alphas = XIELU.initial_alphas()
        for name, param in self.named_parameters():
            owner = name.split(".")[-2]  # the module that holds the parameter: "wq", "ffn_norm", ...
            if owner.endswith("norm"):
                _fill(param, lambda t: t.fill_(1.0))
            elif owner == "act":
                value = alphas[name.rpartition(".")[2]]
                _fill(param, lambda t, v=value: t.fill_(v))
            else:
                _fill(param, _normal(stds.get(owner, 0.02), _param_seed(seed, name)))
        self.reset_buffers()


def plain_name(name: str) -> str:
    """A parameter's name as the bare model has it: wrappers (torch.compile's _orig_mod,
    activation checkpointing's _checkpoint_wrapped_module) insert names of their own."""
    return ".".join(part for part in name.split(".") if not part.startswith("_"))


def _param_seed(seed: int, name: str) -> int:
    name = plain_name(name)  # the seed must not depend on wrappers
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _normal(std: float, seed: int):
    def draw(t: torch.Tensor) -> torch.Tensor:
        # on the tensor's own device (a CPU draw of 8B numbers takes minutes): the same on every
        # rank of one kind of device; a CPU and a CUDA generator differ for one seed
        g = torch.Generator(device=t.device).manual_seed(seed)
        full = torch.empty(t.shape, dtype=torch.float32, device=t.device)
        nn.init.trunc_normal_(full, std=std, a=-3 * std, b=3 * std, generator=g)
        return t.copy_(full)

    return draw


def _fill(param: torch.Tensor, draw) -> None:
    """Apply `draw` to the whole logical tensor; for a sharded DTensor, keep this rank's part."""
    dtensor = _dtensor_api()
    if dtensor is None or not isinstance(param, dtensor.DTensor):
        draw(param.data)
        return
    full = draw(torch.empty(param.shape, dtype=param.dtype, device=param.to_local().device))
    param.to_local().copy_(dtensor.distribute_tensor(full, param.device_mesh, param.placements).to_local())


def _dtensor_api():
    """The DTensor module (public from torch 2.5, private in 2.4), or None without distributed."""
    try:
        import torch.distributed.tensor as api

        api.DTensor  # noqa: B018  (2.4 has the package without the class)
        return api
    except (ImportError, AttributeError):
        try:
            import torch.distributed._tensor as api

            return api
        except ImportError:
            return None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss in fp32, whatever the logits' dtype."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(0, 1))
