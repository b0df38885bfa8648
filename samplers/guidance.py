"""Classifier-free guidance (Ho & Salimans 2022) with guidance rescale (Lin et al. 2023).

The conditional and unconditional predictions come from one batched forward pass:
x_t and t are duplicated, the conditioning dict is batched as [cond; null_cond] along
dim 0, and the output is split and combined as

    pred = uncond + scale * (cond - uncond)                       (Ho & Salimans 2022, eq. 6)

in the model's prediction space (eps, v or x_0, as diffusers' pipelines do). With
rescale = phi > 0 the result's per-sample standard deviation is pulled back towards
the conditional prediction's (Lin et al. 2023, sec. 3.4, eq. 15-16):

    rescaled = pred * std(cond) / std(pred),    pred = phi * rescaled + (1 - phi) * pred

with std over all non-batch dimensions. This works for any conditioning: text, class
labels, a low-res image or known frames are all just entries of the cond dict.

A second, inner condition (InstructPix2Pix, Brooks et al. 2023, eq. 3: the input image
inside the text) gets its own weight: `inner_null` switches it off on top of `null_cond`,
the batch is [cond; null_cond; both off] (3B rows), and

    pred = none + inner_scale * (uncond - none) + scale * (cond - uncond)

which is the plain rule when inner_scale = 1. `inner_from` limits the inner term to the
noisier timesteps t >= inner_from (guidance in an interval, Kynkaanniemi et al. 2024);
below it a step runs the plain two halves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .errors import SamplerError


@dataclass(frozen=True, eq=False)
class CFG:
    """Classifier-free guidance settings for `sample(..., cond=..., guidance=CFG(...))`.

    Args:
        scale: the guidance weight w; 1 means plain conditional sampling (the
            unconditional pass is skipped), 0 unconditional.
        null_cond: the "unconditional" conditioning, e.g. the empty prompt's embedding,
            a null class label or a negative prompt's embedding. Keys missing here are
            taken from the conditional `cond` (so an SR stage guided on text keeps its
            low_res image in both halves). Tensors with batch size 1 are broadcast.
        rescale: phi of guidance rescale (Lin et al. 2023); 0 disables it, 0.7 is typical.
        inner_scale: the weight of an inner condition (see the module docstring); 1 = none.
        inner_null: the entries that switch the inner condition off as well, e.g. a
            masked-frame model's known frames and mask, zeroed.
        inner_from: the inner term applies at training timesteps t >= inner_from only.
    """

    scale: float
    null_cond: Mapping[str, torch.Tensor] = field(default_factory=dict)
    rescale: float = 0.0
    inner_scale: float = 1.0
    inner_null: Mapping[str, torch.Tensor] = field(default_factory=dict)
    inner_from: float = 0

    def __post_init__(self) -> None:
        for name in ("null_cond", "inner_null"):
            if not isinstance(getattr(self, name), Mapping):
                raise SamplerError(f"CFG {name} must be a dict of tensors, got {type(getattr(self, name)).__name__}")
        if not 0 <= self.rescale <= 1:
            raise SamplerError(f"CFG rescale must be between 0 and 1, got {self.rescale}")
        if self.inner_scale != 1 and not self.inner_null:
            raise SamplerError(f"CFG inner_scale {self.inner_scale:g} needs inner_null: the entries that switch "
                               f"the inner condition off")

    @property
    def active(self) -> bool:
        """Whether guidance changes the conditional prediction at all."""
        return self.scale != 1 or self.inner_scale != 1

    def inner_at(self, t) -> bool:
        """Whether a step at training timestep t runs the inner term (3B rows)."""
        return self.inner_scale != 1 and t >= self.inner_from


def _expand(value, key: str, batch: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise SamplerError(f"cond[{key!r}] must be a tensor to be batched for guidance, got {type(value).__name__}")
    if value.dim() == 0 or value.shape[0] not in (1, batch):
        raise SamplerError(f"cond[{key!r}] must have batch size 1 or {batch}, got shape {tuple(value.shape)}")
    return value.expand(batch, *value.shape[1:]) if value.shape[0] != batch else value


def batch_cond(cond: Mapping, null_cond: Mapping, batch: int) -> dict:
    """[cond; null_cond] concatenated along dim 0 for each key (2B rows)."""
    extra = sorted(set(null_cond) - set(cond))
    if extra:
        raise SamplerError(f"null_cond has keys {extra} that cond lacks; cond has {sorted(cond)}")
    batched = {}
    for key, value in cond.items():
        c = _expand(value, key, batch)
        n = _expand(null_cond.get(key, value), key, batch)
        if c.shape[1:] != n.shape[1:]:
            raise SamplerError(
                f"cond[{key!r}] has shape {tuple(c.shape[1:])} per sample but null_cond[{key!r}] has "
                f"{tuple(n.shape[1:])}; they must match to be batched together"
            )
        batched[key] = torch.cat([c, n.to(device=c.device, dtype=c.dtype)])
    return batched


def combine(cond_pred: torch.Tensor, uncond_pred: torch.Tensor, guidance: CFG,
            none_pred: torch.Tensor | None = None) -> torch.Tensor:
    """uncond + scale (cond - uncond), plus (inner_scale - 1) (uncond - none) given the
    prediction with the inner condition off too, then guidance rescale when rescale > 0."""
    pred = torch.lerp(uncond_pred, cond_pred, guidance.scale)
    if none_pred is not None:
        pred = pred + (guidance.inner_scale - 1) * (uncond_pred - none_pred)
    if guidance.rescale > 0:
        dims = list(range(1, pred.dim()))
        std_cond = cond_pred.std(dim=dims, keepdim=True)
        std_pred = pred.std(dim=dims, keepdim=True)
        pred = torch.lerp(pred, pred * (std_cond / std_pred), guidance.rescale)
    return pred


__all__ = ["CFG", "batch_cond", "combine"]
