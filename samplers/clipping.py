"""Keeping the predicted x_0 in range for pixel-space models.

`clip_x0` accepted by `sample`:
    None                 no clipping (latent models)
    a float r > 0        clamp x_0 to [-r, r] (Ho et al. 2020's implementation clips to [-1, 1])
    DynamicThreshold()   Imagen's dynamic thresholding (Saharia et al. 2022, sec. 2.3)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import SamplerError


@dataclass(frozen=True)
class DynamicThreshold:
    """Dynamic thresholding: per sample, s = the `percentile` quantile of |x_0|, clamped to
    [1, max_value]; x_0 is clamped to [-s, s] and divided by s (Saharia et al. 2022, sec. 2.3).
    With max_value = 1 it equals clipping to [-1, 1].
    """

    percentile: float = 0.995
    max_value: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.percentile <= 1:
            raise SamplerError(f"DynamicThreshold percentile must be in [0, 1], got {self.percentile}")
        if not self.max_value >= 1:
            raise SamplerError(f"DynamicThreshold max_value must be >= 1, got {self.max_value}")


def check_clip(clip_x0) -> None:
    """Raise a `SamplerError` unless clip_x0 is None, a positive number or a DynamicThreshold."""
    if clip_x0 is None or isinstance(clip_x0, DynamicThreshold):
        return
    if isinstance(clip_x0, (int, float)) and not isinstance(clip_x0, bool) and clip_x0 > 0:
        return
    raise SamplerError(
        f"clip_x0 must be None, a positive number r (clamp x0 to [-r, r]) or DynamicThreshold(...), got {clip_x0!r}"
    )


def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise linearly interpolated quantile of a (B, N) tensor, like torch.quantile but
    without its input-size limit (two kthvalue selections instead of a sort)."""
    n = x.shape[1]
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    v_lo = x.kthvalue(lo + 1, dim=1).values
    if hi == lo or pos == lo:
        return v_lo
    v_hi = x.kthvalue(hi + 1, dim=1).values
    return v_lo + (v_hi - v_lo) * (pos - lo)


def apply_clip(x0: torch.Tensor, clip_x0) -> torch.Tensor:
    """Clip or dynamically threshold a predicted x_0 (any rank, batch first)."""
    if clip_x0 is None:
        return x0
    if not isinstance(clip_x0, DynamicThreshold):
        return x0.clamp(-clip_x0, clip_x0)
    flat = x0.reshape(x0.shape[0], -1)  # (B, N)
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    s = quantile(work.abs(), clip_x0.percentile).clamp(min=1.0, max=clip_x0.max_value)[:, None]  # (B, 1)
    return (torch.maximum(torch.minimum(work, s), -s) / s).to(x0.dtype).reshape(x0.shape)


__all__ = ["DynamicThreshold", "apply_clip", "check_clip", "quantile"]
