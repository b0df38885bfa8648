"""The building blocks shared by the U-Net and the DiT, one implementation each.

Images are (B, C, H, W), videos (B, C, T, H, W). Spatial layers see a video as a batch
of frames (frames folded into the batch, so they never mix frames); temporal layers see
each spatial position as a sequence over time. Temporal layers and every residual
branch that a paper initialises to zero start at zero here, so a fresh block is the
identity on its residual stream, and a video model starts as its image model applied
frame by frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps (Vaswani et al. 2017; DDPM): (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedder(nn.Module):
    """t -> sinusoid -> MLP (DiT's TimestepEmbedder)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    """Multi-head attention (`attention` below: scaled_dot_product_attention, or plain ops for short keys).

    Self-attention when `context_dim` is None (fused qkv), else cross-attention to a
    context (B, M, context_dim) with an optional key mask (B, M), True = attend.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, zero_out: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.cross = context_dim is not None
        if self.cross:
            self.to_q = nn.Linear(dim, dim)
            self.to_kv = nn.Linear(context_dim, 2 * dim)
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)
        if zero_out:
            zero_(self.to_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.cross:
            q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
            k, v = rearrange(self.to_kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        else:
            q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        attn_mask = None
        if mask is not None:
            mask = mask | ~mask.any(dim=-1, keepdim=True)  # a fully masked row attends to all
            attn_mask = mask[:, None, None, :]
        return self.to_out(rearrange(attention(q, k, v, attn_mask), "b h n d -> b n (h d)"))


SHORT_KEYS = 64  # CPU: up to this many keys, plain softmax(q k^T) v beats the fused kernel
PLAIN_BLOCK = 2 ** 20  # CPU bf16 inference: score elements a block of plain ops holds (2 MB, about the L2 caches)
PLAIN_BLOCK_TRAIN = 2 ** 22  # ... with gradients: fewer, larger blocks (the backward's overhead is per block)
PLAIN_TRAIN_MAX = 2 ** 26  # ... with gradients, at most this many score elements in all (autograd keeps them all)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over (..., L, d) tensors, mask True = attend.

    scaled_dot_product_attention, except on the CPU for short key sequences (a temporal
    block's frames, a text context), where the fused kernel's backward is several times
    slower than the three plain ops, and in bf16, where the plain ops in blocks of
    sequences whose scores fit the caches are faster than the fused kernel: 1.7-3.3x in
    inference, about 2x forward + backward (scripts/bench_attention.py). With gradients
    the plain ops keep every probability for the backward, so past PLAIN_TRAIN_MAX score
    elements the fused kernel (memory linear in the length) takes over.
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if all(t.dtype == torch.bfloat16 for t in (q, k, v)):
        if cpu_bf16_inference(q, k, v):
            return _plain_blocks(q, k, v, mask, PLAIN_BLOCK)
        if score_elements(q, k) <= PLAIN_TRAIN_MAX:
            return _plain_blocks(q, k, v, mask, PLAIN_BLOCK_TRAIN)
    if k.shape[-2] > SHORT_KEYS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return _plain(q, k, v, mask)


def score_elements(q: torch.Tensor, k: torch.Tensor) -> int:
    """How many attention scores q k^T holds, over the broadcast batch and heads."""
    return torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]).numel() * q.shape[-2] * k.shape[-2]


def cpu_bf16_inference(*tensors: torch.Tensor) -> bool:
    """Whether these bf16 CPU tensors are an inference pass (no gradient to keep): where
    `attention` and `TanhGELU` take their faster forms."""
    return all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in tensors) and not (
        torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _plain(q, k, v, mask):
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # scaling q: fewer elements than the scores
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _plain_blocks(q, k, v, mask, block: int):
    """`_plain` over blocks of (sequence, query) rows, each block's scores at most `block` elements.
    With gradients the blocks are joined by torch.cat (autograd through slice writes is slower)."""
    lq, lk = q.shape[-2], k.shape[-2]
    if score_elements(q, k) <= block:
        return _plain(q, k, v, mask)
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q3, k3, v3 = (t.expand(*lead, *t.shape[-2:]).reshape(-1, *t.shape[-2:]) for t in (q, k, v))
    m3 = None if mask is None else mask.expand(*lead, lq, lk).reshape(-1, lq, lk)
    seqs = max(1, block // (lq * lk))  # whole sequences a block, or else query rows of one
    rows = lq if seqs > 1 else max(1, block // lk)
    parts = [[_plain(q3[i:i + seqs, j:j + rows], k3[i:i + seqs], v3[i:i + seqs],
                     None if m3 is None else m3[i:i + seqs, j:j + rows]) for j in range(0, lq, rows)]
             for i in range(0, q3.shape[0], seqs)]
    if torch.is_grad_enabled():
        out = torch.cat([torch.cat(row, dim=1) for row in parts])
    else:
        out = q3.new_empty(q3.shape[0], lq, v3.shape[-1])
        for i, row in zip(range(0, q3.shape[0], seqs), parts):
            for j, part in zip(range(0, lq, rows), row):
                out[i:i + seqs, j:j + rows] = part
    return out.reshape(*lead, lq, v3.shape[-1])


class TanhGELU(nn.GELU):
    """GELU, tanh approximation (DiT's MLP). In bf16 on the CPU it is computed in the exact
    (erf) form, forward and backward 2.5-4x faster there: the two differ by under 5e-4, a
    sixteenth of bf16's spacing at 1, and their derivatives by under 1e-3."""

    def __init__(self):
        super().__init__(approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            return F.gelu(x)
        return super().forward(x)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: float = 4.0, zero_out: bool = False):
        hidden = int(dim * mult)
        super().__init__(nn.Linear(dim, hidden), TanhGELU(), nn.Linear(hidden, dim))
        if zero_out:
            zero_(self[2])


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with (B, D) modulation over (B, N, D) tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


# --- convolutional blocks (U-Net) -------------------------------------------------

class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm, the same parameters and values. Under torch.compile it is written as
    per-channel sums over the positions, grouped on the small (N, C) tensors, so that no
    activation is reshaped into groups: inductor's lowering of the native op materialises
    a channels-first float32 copy of every channels_last activation in the backward,
    which made GroupNorm the largest share of a compiled SR U-Net step. Statistics are the
    float32 mean and mean square (as torch's own channels_last CPU kernel computes them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return super().forward(x)
        c, g = x.shape[1], self.num_groups
        positions = tuple(range(2, x.dim()))
        # group membership (C, G); products with it pool channels into groups and spread groups
        # back, as small matmuls that keep every activation-sized loop in its own layout
        member = (torch.arange(c, device=x.device)[:, None] // (c // g) == torch.arange(g, device=x.device)).float()
        xf = x.float()
        with torch.autocast(x.device.type, enabled=False):  # statistics in float32, not autocast's bf16
            mean = xf.mean(positions) @ member / (c // g)                         # (N, G)
            var = (xf * xf).mean(positions) @ member / (c // g) - mean * mean
            rstd = torch.rsqrt(var.clamp_min(0) + self.eps)
            scale, shift = rstd @ member.T, -(mean * rstd) @ member.T             # (N, C)
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        trailing = (1,) * (x.dim() - 2)
        return (xf * scale.view(*scale.shape, *trailing) + shift.view(*shift.shape, *trailing)).to(x.dtype)


def group_norm(channels: int) -> GroupNorm:
    return GroupNorm(min(32, channels // 4) if channels >= 8 else 1, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Residual block with scale-shift conditioning (Dhariwal & Nichol 2021, "BigGAN-style"):
    h = conv(silu(norm(x))); h = norm(h) * (1 + scale) + shift; out = x + conv(silu(h))."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W); emb: (N, E)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SpatialTransformer(nn.Module):
    """Attention on a feature map (Rombach et al. 2022): self-attention over the H*W
    positions, cross-attention to text, feed-forward; zero-initialised output."""

    def __init__(self, channels: int, heads: int, context_dim: int | None):
        super().__init__()
        self.norm = group_norm(channels)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = Attention(channels, heads)
        self.norm2 = nn.LayerNorm(channels) if context_dim else None
        self.cross = Attention(channels, heads, context_dim=context_dim) if context_dim else None
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels)
        self.proj_out = zero_(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, context=None, mask=None) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.proj_in(rearrange(self.norm(x), "n c h w -> n (h w) c"))
        tokens = tokens + self.attn(self.norm1(tokens))
        if self.cross is not None and context is not None:
            tokens = tokens + self.cross(self.norm2(tokens), context, mask)
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + rearrange(self.proj_out(tokens), "n (h w) c -> n c h w", h=h, w=w)


class Downsample(nn.Conv2d):
    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(upsample_nearest_2x(x))


def upsample_nearest_2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling of (N, C, H, W), the same values either way. Eagerly it
    is F.interpolate, whose backward is a native kernel. Under torch.compile it is each pixel
    broadcast to a 2x2 block: inductor lowers interpolate's backward to a scatter-add
    (index_put), 25x slower than the broadcast's backward, a sum over the block, at the SR
    U-Net's shapes (bf16, channels_last; the broadcast's backward is 10x slower eagerly)."""
    if not torch.compiler.is_compiling():
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):  # broadcast in (N, H, W, C), stay channels_last
        nhwc = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(n, h, 2, w, 2, c)
        return nhwc.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


# --- temporal layers (video) ---------------------------------------------------------

class TemporalConv(nn.Module):
    """1-D convolution over time at every spatial position (Make-A-Video's pseudo-3D
    conv), residual and zero-initialised: identity at init."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.norm = group_norm(channels)
        self.conv = zero_(nn.Conv1d(channels, channels, kernel, padding=kernel // 2))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        # x: (B*T, C, H, W) -> every (b, h, w) as a sequence over T
        h, w = x.shape[-2:]
        seq = rearrange(F.silu(self.norm(x)), "(b t) c h w -> (b h w) c t", t=frames)
        out = rearrange(self.conv(seq), "(b h w) c t -> (b t) c h w", h=h, w=w)
        return x + out


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin-cos embedding of float positions (N,): (N, dim) (Vaswani et al.)."""
    return timestep_embedding(positions, dim, max_period=10000.0)


class TemporalAttention(nn.Module):
    """Each spatial position attends across frames (Ho et al. 2022, video diffusion),
    with a sin-cos frame position added to its queries and keys' input only, and a
    zero-initialised output: identity at init."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, zero_out=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (N, T, D), N = batch x spatial positions
        pos = sincos_1d(torch.arange(tokens.shape[1], device=tokens.device, dtype=torch.float32), tokens.shape[-1])
        return tokens + self.attn(self.norm(tokens) + pos.to(tokens.dtype))


# --- patches (DiT) -------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Images to tokens with p x p patches, or clips with t x p x p tubelets (ViViT).

    A tubelet depth of 1 embeds each frame with the 2-D patch embedding, so a video
    model shares its image twin's weights.
    """

    def __init__(self, in_channels: int, dim: int, patch: int, tubelet: int = 1):
        super().__init__()
        self.patch, self.tubelet = patch, tubelet
        if tubelet == 1:
            self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        else:
            self.proj = nn.Conv3d(in_channels, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # image (B, C, H, W) -> (B, 1, N, D); video (B, C, T, H, W) -> (B, T', N, D)
        if x.dim() == 4:
            return rearrange(self.proj(x), "b d h w -> b 1 (h w) d")
        if self.tubelet == 1:
            b = x.shape[0]
            y = self.proj(rearrange(x, "b c t h w -> (b t) c h w"))
            return rearrange(y, "(b t) d h w -> b t (h w) d", b=b)
        return rearrange(self.proj(x), "b d t h w -> b t (h w) d")


def unpatchify(tokens: torch.Tensor, channels: int, patch: int, tubelet: int, height: int, width: int,
               video: bool) -> torch.Tensor:
    """(B, T', N, t*p*p*C) tokens back to an image (B, C, H, W) or clip (B, C, T, H, W)."""
    x = rearrange(tokens, "b t (h w) (tp p q c) -> b c (t tp) (h p) (w q)",
                  h=height // patch, w=width // patch, tp=tubelet, p=patch, q=patch, c=channels)
    return x if video else x[:, :, 0]


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """2-D sin-cos position embedding (MAE / DiT): half the dims for rows, half for
    columns. (h*w, dim)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.cat([sincos_1d(ys.flatten(), dim // 2), sincos_1d(xs.flatten(), dim - dim // 2)], dim=-1)
