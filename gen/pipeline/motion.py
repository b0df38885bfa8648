"""Motion-compensated in-between frames: the start temporal super-resolution refines."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bilateral_midframes(before: torch.Tensor, after: torch.Tensor, radius: int = 3, patch: int = 2,
                        smooth: float = 0.2) -> torch.Tensor:
    """The frames halfway between `before` and `after` ((..., C, H, W), same shape) by
    bilateral motion estimation: each pixel p of the new frame takes the displacement v in
    [-radius, radius]^2 whose pair before(p - v), after(p + v) agrees best (L1 over channels,
    averaged over a (2 patch + 1)^2 window, plus `smooth` x |v| so that flat regions keep
    v = 0), and is the mean of that pair. An object moving in a straight line is drawn at
    the middle of its path instead of twice at half strength as by the linear blend; where
    nothing moves it is the blend. Borders repeat the edge pixels."""
    if before.shape != after.shape or before.dim() < 3:
        raise ValueError(f"before and after must be frames (..., C, H, W) of one shape, got "
                         f"{tuple(before.shape)} and {tuple(after.shape)}")
    lead, (c, h, w) = before.shape[:-3], before.shape[-3:]
    a, b = (x.reshape(-1, c, h, w).float() for x in (before, after))
    pad = (radius,) * 4
    a, b = F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate")
    best_cost = best = None
    shifts = sorted(((dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)),
                    key=lambda v: v[0] ** 2 + v[1] ** 2)  # ties keep the smaller motion, v = 0 first
    for dy, dx in shifts:
        pa = a[:, :, radius - dy:radius - dy + h, radius - dx:radius - dx + w]  # before(p - v)
        pb = b[:, :, radius + dy:radius + dy + h, radius + dx:radius + dx + w]  # after(p + v)
        cost = F.avg_pool2d((pa - pb).abs().sum(1, keepdim=True), 2 * patch + 1, 1, patch,
                            count_include_pad=False) + smooth * (dx * dx + dy * dy) ** 0.5
        mid = (pa + pb) / 2
        if best is None:
            best_cost, best = cost, mid
            continue
        better = cost < best_cost
        best_cost, best = torch.where(better, cost, best_cost), torch.where(better, mid, best)
    return best.reshape(*lead, c, h, w).to(before.dtype)
