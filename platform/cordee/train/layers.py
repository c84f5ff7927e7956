"""The transformer's building blocks below the block level, each matching what Hugging Face computes
so imported weights give the same outputs: RMSNorm (in fp32), rotary embeddings (frequencies, Llama
3.1 scaling, the rotation in Llama's half-split layout), xIELU (Apertus' activation), and causal
attention over packed rows (a dense boolean mask or a FlexAttention block mask). model.py
assembles them into blocks and the Transformer, counts its parameters and initializes it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cordee.train.config import ModelConfig


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


def llama3_scaled(inv_freq: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Llama 3.1's frequency scaling (Hugging Face `modeling_rope_utils`, rope_type "llama3"):
    wavelengths above original/low_freq_factor are stretched by `factor`, those below
    original/high_freq_factor kept, the band between interpolated smoothly."""
    freq = inv_freq.double()
    wavelength = 2 * math.pi / freq
    original, low, high = cfg.rope_original_max_len, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    smooth = (original / wavelength - low) / (high - low)
    between = (1 - smooth) * freq / cfg.rope_factor + smooth * freq
    scaled = torch.where(wavelength > original / low, freq / cfg.rope_factor, between)
    return torch.where(wavelength < original / high, freq, scaled).float()


def rope_frequencies(cfg: ModelConfig, device=None) -> torch.Tensor:
    inv_freq = rotary_frequencies(cfg.head_size, cfg.rope_theta, device=device)
    return llama3_scaled(inv_freq, cfg) if cfg.rope_scaling == "llama3" else inv_freq


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, head_dim] rotated by the angles of its positions (cos, sin: [T, head_dim / 2]
    for positions 0..T-1, or [B, T, head_dim / 2] per token), in fp32. The two halves of each head
    form the pairs (Hugging Face Llama's layout)."""
    half = x.shape[-1] // 2
    if cos.ndim == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] bool: query i sees key j when j <= i and both lie in the same segment. B x T x T
    bytes (8 MiB per sequence at T = 4096), and SDPA with a mask cannot take the fused causal
    kernels: the price of packing several documents into one row."""
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


def segment_block_mask(segments: torch.Tensor):
    """The same rule as segment_mask as a FlexAttention BlockMask: only the 128 x 128 tiles that
    hold a visible pair are computed, so packed rows cost about what one causal sequence costs.
    Fast only inside compiled blocks (wrap_model chooses it then, on GPUs)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_conversation(b, h, q, kv):
        return (q >= kv) & (segments[b, q] == segments[b, kv])

    b, t = segments.shape
    return create_block_mask(same_conversation, b, None, t, t, device=segments.device)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """Causal attention [B, heads, T, head_dim]: fused causal SDPA without a mask, SDPA with a
    boolean mask, or FlexAttention with a BlockMask."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if isinstance(mask, torch.Tensor):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=mask)


XIELU_ALPHA_P, XIELU_ALPHA_N, XIELU_BETA, XIELU_EPS = 0.8, 0.8, 0.5, -1e-6  # transformers' defaults


class XIELU(nn.Module):
    """xIELU (arXiv 2411.13010) as `transformers.activations.XIELUActivation` computes it: trained
    alpha_p, alpha_n (stored before softplus, shape [1]); beta and eps are saved constants."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha_p = nn.Parameter(torch.empty(1))
        self.alpha_n = nn.Parameter(torch.empty(1))
        self.register_buffer("beta", torch.tensor(XIELU_BETA))
        self.register_buffer("eps", torch.tensor(XIELU_EPS))

    def reset_constants(self) -> None:
        self.beta.fill_(XIELU_BETA)
        self.eps.fill_(XIELU_EPS)

    @staticmethod
    def initial_alphas() -> dict[str, float]:
        """The stored values that give alpha_p = 0.8 and alpha_n = beta + 0.3 (softplus inverted)."""
        inverse = lambda y: math.log(math.expm1(y))  # noqa: E731
        return {"alpha_p": inverse(XIELU_ALPHA_P), "alpha_n": inverse(XIELU_ALPHA_N - XIELU_BETA)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha_p = F.softplus(self.alpha_p)
        alpha_n = self.beta + F.softplus(self.alpha_n)
        positive = alpha_p * x * x + self.beta * x
        negative = (torch.expm1(torch.minimum(x, self.eps)) - x) * alpha_n + self.beta * x
        return torch.where(x > 0, positive, negative)
