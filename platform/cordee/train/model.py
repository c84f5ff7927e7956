"""The reference decoder-only transformer, Llama style: RMSNorm before attention and feed-forward,
rotary position embeddings, SwiGLU, grouped-query attention, untied output projection.

Built for FSDP2 and torch.compile: blocks are the units `fully_shard` wraps (`.layers`, each
called as `block(x)`), forward has no data-dependent Python branches, and the rotary frequencies
are non-persistent buffers that `init_weights` recomputes (so a model built on the meta device
and materialized with `to_empty` is complete). No dropout: a run is a pure function of its seeds.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from cordee.train.config import ModelConfig


def num_params(cfg: ModelConfig, embeddings: bool = True) -> int:
    """Parameters of Transformer(cfg), counted from the shape. `embeddings=False` leaves out the
    input embedding and the output projection."""
    head = cfg.dim // cfg.n_heads
    attention = cfg.dim * head * (cfg.n_heads + 2 * cfg.n_kv_heads) + cfg.n_heads * head * cfg.dim
    block = attention + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim
    total = cfg.n_layers * block + cfg.dim  # the final norm
    return total + (2 * cfg.vocab_size * cfg.dim if embeddings else 0)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Model FLOPs of one training token (forward + backward): 6 x parameters + 12 x layers x
    width x seq_len for causal attention (the PaLM paper, appendix B, and llm-foundry's
    convention). Parameters include both embedding tables, as in llm-foundry's count."""
    return 6.0 * num_params(cfg) + 12.0 * cfg.n_layers * cfg.dim * seq_len


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in fp32 whatever the compute dtype: the mean of squares of bf16 values loses too much
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).type_as(x)


def rotary_frequencies(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """[head_dim / 2] float32: the angle per position of each rotated pair, theta^(-2i/head_dim)."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim
    return (theta**-exponents).float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, head_dim] rotated by the angles of positions 0..T-1 (cos, sin: [T, head_dim
    / 2]), in fp32. The two halves of each head form the pairs (Hugging Face Llama's layout)."""
    half = x.shape[-1] // 2
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim, self.rope_theta = cfg.dim // cfg.n_heads, cfg.rope_theta
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)
        # A buffer of the block, not an input: FSDP2 casts floating-point block inputs to bf16,
        # which would put the angles off by up to 0.4%. Not saved; reset_rotary() rebuilds it.
        self.register_buffer("inv_freq", rotary_frequencies(self.head_dim, cfg.rope_theta), persistent=False)

    def reset_rotary(self) -> None:
        self.inv_freq = rotary_frequencies(self.head_dim, self.rope_theta, device=self.inv_freq.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # cos/sin recomputed every call (T x head_dim/2 values, fused by the compiler): cheaper
        # than a table per block, and exact in fp32 whatever the compute dtype
        angles = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), self.inv_freq.float())
        cos, sin = angles.cos(), angles.sin()
        q = apply_rotary(self.wq(x).view(b, t, self.n_heads, self.head_dim), cos, sin)
        k = apply_rotary(self.wk(x).view(b, t, self.n_kv_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, head_dim]
        repeat = self.n_heads // self.n_kv_heads
        if repeat > 1:  # grouped-query: each key/value head serves `repeat` query heads
            k = k.repeat_interleave(repeat, dim=1)
            v = v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] (T <= max_seq_len) -> logits [B, T, vocab_size]."""
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.output(self.norm(h))

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Deterministic initialization: each parameter drawn from its own generator seeded by
        (seed, parameter name), so the weights depend on neither the order of the calls nor the
        number of ranks. Works on a full module, on one materialized from the meta device, and
        after FSDP2 `fully_shard` (each rank draws the whole tensor and keeps its shard).
        Scheme (as in torchtitan's Llama): embeddings N(0, 1); input projections N(0, 0.02);
        projections into the residual stream N(0, 0.02 / sqrt(2 x layers)); the output
        N(0, 1/sqrt(dim)); every normal cut at 3 standard deviations; norms 1."""
        depth_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        stds = {"tok_embeddings": 1.0, "output": self.cfg.dim**-0.5, "wo": depth_std, "w2": depth_std}
        for name, param in self.named_parameters():
            owner = name.split(".")[-2]  # the module that holds the parameter: "wq", "ffn_norm", ...
            if owner.endswith("norm"):
                _fill(param, lambda t: t.fill_(1.0))
            else:
                _fill(param, _normal(stds.get(owner, 0.02), _param_seed(seed, name)))
        for module in self.modules():
            if isinstance(module, Attention):
                module.reset_rotary()


def _param_seed(seed: int, name: str) -> int:
    # wrappers (torch.compile's _orig_mod, activation checkpointing's _checkpoint_wrapped_module)
    # insert names of their own; the seed must not depend on them
    name = ".".join(part for part in name.split(".") if not part.startswith("_"))
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
