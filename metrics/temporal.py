"""Temporal consistency of generated clips: do consecutive frames agree?

    from metrics.temporal import frame_consistency, temporal_consistency, temporal_flicker
    frame_consistency(frame_features)          # (B, T, D) per-frame features -> (B,) in [-1, 1]
    temporal_consistency(clips, encode)        # clips (B, C, T, H, W), encode: (N, C, H, W) -> (N, D)
    temporal_flicker(clips)                    # clips in [-1, 1] -> (B,) in [0, 1], 0 = no change

Two measures, both per clip, both over consecutive frame pairs (t, t + 1), t = 0 .. T - 2:

frame consistency   1/(T-1) sum_t cos(f_t, f_{t+1}) with f_t the feature vector of frame t
                    (CLIP image features in the literature, e.g. Esser et al. 2023, Gen-1;
                    any per-frame encoder here). 1 means every frame looks the same to the
                    encoder; it says nothing about whether the clip moves at all.

temporal flicker    1/(T-1) sum_t mean_{c,h,w} |x_{t+1} - x_t| / data_range: the mean absolute
                    temporal difference of the pixels, as a fraction of the pixel range
                    (2 for [-1, 1]). No motion is removed (no warping, no flow): it counts
                    every change between frames, real motion and flicker alike, so it reads as
                    flicker only on static content or when comparing models on the same
                    prompts. 0 means a frozen clip; 1 - temporal_flicker on uint8 frames is
                    VBench's temporal-flickering formula, (255 - MAE) / 255.

No 1-5 style mapping is offered: there is no agreed calibration between these numbers and
human ratings. Everything is float64; results are (B,) on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange

from metrics.stats import as_float64


def _check_clips(clips, name: str = "clips") -> torch.Tensor:
    x = torch.as_tensor(clips).detach()
    if x.dim() != 5:
        raise ValueError(f"{name} must be (B, C, T, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] < 2:
        raise ValueError(f"temporal measures need at least 2 frames per clip, got T={x.shape[2]}")
    return x


def frame_consistency(frame_features) -> torch.Tensor:
    """Mean cosine similarity of consecutive frames' features: (B, T, D) -> (B,) float64 in [-1, 1]."""
    f = as_float64(frame_features)
    if f.dim() != 3:
        raise ValueError(f"frame_features must be (B, T, D), got shape {tuple(f.shape)}")
    if f.shape[1] < 2:
        raise ValueError(f"frame consistency needs at least 2 frames per clip, got T={f.shape[1]}")
    if not torch.isfinite(f).all():
        raise ValueError("frame_features hold NaN or inf")
    norm = f.norm(dim=2)  # (B, T)
    if (norm == 0).any():
        raise ValueError(f"frame_features has all-zero vectors at (clip, frame) "
                         f"{(norm == 0).nonzero()[:5].tolist()}: their cosine is undefined")
    unit = f / norm.unsqueeze(2)  # (B, T, D)
    cos = (unit[:, 1:] * unit[:, :-1]).sum(dim=2)  # (B, T-1)
    return cos.mean(dim=1).cpu()


@torch.no_grad()
def temporal_consistency(clips, encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """`frame_consistency` of clips (B, C, T, H, W) under a per-frame encoder
    `encode(frames (N, C, H, W)) -> (N, D)`, called on at most `batch_size` frames at a time."""
    x = _check_clips(clips)
    b = x.shape[0]
    frames = rearrange(x, "b c t h w -> (b t) c h w")
    features = torch.cat([torch.as_tensor(encode(chunk)).flatten(1) for chunk in frames.split(batch_size)])
    return frame_consistency(rearrange(features, "(b t) d -> b t d", b=b))


def temporal_flicker(clips, data_range: float = 2.0) -> torch.Tensor:
    """Mean absolute difference between consecutive frames, over channels and pixels, divided
    by `data_range` (2 for [-1, 1], 255 for uint8): (B, C, T, H, W) -> (B,) float64 in [0, 1]."""
    if not data_range > 0:
        raise ValueError(f"data_range must be positive (2.0 for [-1, 1]), got {data_range}")
    x = as_float64(_check_clips(clips))
    step = (x[:, :, 1:] - x[:, :, :-1]).abs()  # (B, C, T-1, H, W)
    return (step.flatten(1).mean(dim=1) / data_range).cpu()


__all__ = ["frame_consistency", "temporal_consistency", "temporal_flicker"]
