"""The denoiser contract every network honours: `model(x_t, t, cond) -> prediction`.

`x_t` is an image batch (B, C, H, W) or a video batch (B, C, T, H, W), `t` a (B,)
tensor of training timesteps, and `cond` a dict of tensors (`text`, `text_mask`,
`pooled`, `label`, `low_res`, `frames`, `frame_mask`, `noise_level`, ...). A model
names the keys it needs in `cond_keys` and fails clearly when one is missing.
"""

from __future__ import annotations

import torch


def check_inputs(name: str, x: torch.Tensor, t: torch.Tensor, cond: dict | None,
                 channels: int, ranks: tuple[int, ...], needs: tuple[str, ...],
                 widths: dict[str, int | None] | None = None) -> dict:
    """Validate a denoiser call; return `cond` (never None). `widths`: the feature width
    (last dimension) the model was built for, per cond key (`text`: text_dim, ...)."""
    cond = {} if cond is None else cond
    if x.dim() not in ranks:
        kinds = " or ".join({4: "(B, C, H, W)", 5: "(B, C, T, H, W)"}[r] for r in ranks)
        raise ValueError(f"{name} takes x of shape {kinds}, got {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} was built for {channels} input channels, got x of shape {tuple(x.shape)} "
                         f"({x.shape[1]} channels)")
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: t must have shape ({x.shape[0]},) to match the batch, got {tuple(t.shape)}")
    missing = [k for k in needs if k not in cond]
    if missing:
        raise ValueError(f"{name} needs cond key(s) {', '.join(missing)}; got {', '.join(cond) or 'none'}")
    for key, width in (widths or {}).items():
        value = cond.get(key)
        if width and isinstance(value, torch.Tensor) and (value.dim() < 2 or value.shape[-1] != width):
            raise ValueError(f"{name} was built for cond[{key!r}] with {width} features (its {key}_dim), got a "
                             f"tensor of shape {tuple(value.shape)} ({value.shape[-1] if value.dim() else 0} "
                             f"features): use the text encoder the model was trained with")
    return cond
