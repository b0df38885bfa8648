"""Conditioning shared by the denoisers: timestep, pooled text, class label and
noise-augmentation level into one vector; text tokens into a cross-attention context;
images and frames concatenated to the input channels; and the learned null condition
for classifier-free guidance.

A `cond` dict may carry `null`, a (B,) bool tensor: rows where it is True use the
learned null embeddings instead of `text` / `pooled` / `label` (Ho & Salimans 2021).
Training drops conditioning by setting it at random; a sampler builds the
unconditional half of a CFG batch as `{**cond, "null": ones}` (or a negative prompt's
cond with `null` False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import TimestepEmbedder

# Extra input channels each concatenation key adds, as a function of the input channels.
CONCAT_CHANNELS = {"low_res": lambda c: c, "frames": lambda c: c, "frame_mask": lambda c: 1}


def concat_channels(keys: tuple[str, ...], in_channels: int) -> int:
    unknown = [k for k in keys if k not in CONCAT_CHANNELS]
    if unknown:
        raise ValueError(f"unknown concat key(s) {unknown}; known: {', '.join(CONCAT_CHANNELS)}")
    return sum(CONCAT_CHANNELS[k](in_channels) for k in keys)


def concat_inputs(x: torch.Tensor, cond: dict, keys: tuple[str, ...]) -> torch.Tensor:
    """x with cond[keys] appended as channels (resized to x's size where needed).

    `low_res`: an image or clip at lower resolution (spatial super-resolution);
    `frames`: known frames of a clip; `frame_mask`: (B, T) or broadcastable, 1 where a
    frame is known (temporal super-resolution). With both, the model sees each unknown
    frame as `fill_frames` guesses it from the known ones (whatever `frames` holds there).
    """
    parts = [x]
    for key in keys:
        value = cond[key].to(x.dtype)
        if key == "frames" and "frame_mask" in keys:
            value = fill_frames(value, cond["frame_mask"])
        if key == "frame_mask":
            if value.dim() == 2:  # (B, T)
                value = value[:, None, :, None, None]
            value = value.expand(x.shape[0], 1, *x.shape[2:])
        elif value.shape[-2:] != x.shape[-2:]:
            if value.dim() == 5:
                b = value.shape[0]
                flat = F.interpolate(value.transpose(1, 2).flatten(0, 1), size=x.shape[-2:], mode="bilinear",
                                     align_corners=False, antialias=True)
                value = flat.unflatten(0, (b, -1)).transpose(1, 2)
            else:
                value = F.interpolate(value, size=x.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        if value.shape[2:] != x.shape[2:]:
            raise ValueError(f"cond[{key!r}] of shape {tuple(value.shape)} does not match x of shape {tuple(x.shape)}")
        parts.append(value)
    return torch.cat(parts, dim=1)


def fill_frames(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """frames (B, C, T, H, W) with each frame the mask (B, T) marks unknown replaced by
    the linear blend of its nearest known frames before and after (by distance in
    frames), or by the nearest known one where it has a known frame on one side only;
    zero where no frame is known. A masked-frame model thus starts from a copy of the
    still (animation), the blend of the neighbours (interpolation) or the last frame
    held (extension), as image-to-video models give the still to every frame (SVD)."""
    if mask.dim() != 2:
        mask = mask.reshape(mask.shape[0], -1) if mask.dim() == 1 else mask.flatten(2).amax(2).flatten(1)
    mask = mask.expand(frames.shape[0], frames.shape[2]) > 0.5
    t = torch.arange(frames.shape[2], device=frames.device).expand_as(mask)
    never = frames.shape[2] * 4  # farther than any frame
    before = torch.where(mask, t, -never).cummax(1).values  # nearest known index at or before t
    after = torch.where(mask, t, never).flip(1).cummin(1).values.flip(1)  # at or after t
    has_b, has_a = before >= 0, after < frames.shape[2]
    gap = (after - before).clamp(min=1).to(frames.dtype)
    w_after = torch.where(has_b & has_a, (t - before).to(frames.dtype) / gap, has_a.to(frames.dtype))
    w_before = torch.where(has_b, 1 - w_after, torch.zeros_like(w_after))
    w_after = torch.where(has_a, w_after, torch.zeros_like(w_after))
    # weights (B, T_out, T_in): row t has w_before at `before` and w_after at `after`
    weights = torch.zeros(*mask.shape, mask.shape[1], dtype=frames.dtype, device=frames.device)
    weights.scatter_add_(2, before.clamp(min=0)[..., None], w_before[..., None])
    weights.scatter_add_(2, after.clamp(max=mask.shape[1] - 1)[..., None], w_after[..., None])
    return torch.einsum("bts,bcshw->bcthw", weights, frames)


class Conditioner(nn.Module):
    """(t, cond) -> (c: (B, dim), context: (B, L, context_dim) | None, mask: (B, L) | None)."""

    def __init__(self, dim: int, text_dim: int | None = None, pooled_dim: int | None = None,
                 num_classes: int | None = None, noise_level: bool = False, context_dim: int | None = None):
        super().__init__()
        self.t_embed = TimestepEmbedder(dim)
        self.pooled = nn.Linear(pooled_dim, dim) if pooled_dim else None
        self.null_pooled = nn.Parameter(torch.zeros(pooled_dim)) if pooled_dim else None
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None  # last row: null
        self.noise_level = TimestepEmbedder(dim) if noise_level else None
        self.text_proj = nn.Linear(text_dim, context_dim or dim) if text_dim else None
        self.null_text = nn.Parameter(torch.randn(1, 1, text_dim) * 0.02) if text_dim else None
        if self.label is not None:
            nn.init.normal_(self.label.weight, std=0.02)

    @property
    def keys(self) -> tuple[str, ...]:
        keys = []
        if self.text_proj is not None:
            keys.append("text")
        if self.pooled is not None:
            keys.append("pooled")
        if self.label is not None:
            keys.append("label")
        if self.noise_level is not None:
            keys.append("noise_level")
        return tuple(keys)

    def forward(self, t: torch.Tensor, cond: dict):
        c = self.t_embed(t)
        null = cond.get("null")
        if self.pooled is not None:
            pooled = cond["pooled"].to(c.dtype)
            if null is not None:
                pooled = torch.where(null[:, None], self.null_pooled.to(c.dtype), pooled)
            c = c + self.pooled(pooled)
        if self.label is not None:
            label = cond["label"].long()
            if null is not None:
                label = torch.where(null, torch.full_like(label, self.num_classes), label)
            c = c + self.label(label)
        if self.noise_level is not None:
            c = c + self.noise_level(cond["noise_level"])
        context = mask = None
        if self.text_proj is not None:
            text = cond["text"].to(c.dtype)
            mask = cond.get("text_mask")
            if mask is None:
                mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
            mask = mask.bool()
            if null is not None:
                text = torch.where(null[:, None, None], self.null_text.to(text.dtype).expand_as(text), text)
                first = torch.arange(text.shape[1], device=text.device) == 0
                mask = torch.where(null[:, None], first[None], mask)
            context = self.text_proj(text)
        return c, context, mask
