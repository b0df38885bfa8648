"""The samplers' single view of the user's model: (x_t, t) -> (x_0, eps).

Calling rule for the user's `denoise`:
    no cond, no guidance   denoise(x_t, t)
    cond given             denoise(x_t, t, cond)
    guidance given         denoise(x_t, t, cond) once per step on 2B rows: x_t and t
                           duplicated, cond batched as [cond; null_cond] (see guidance.py);
                           3B rows at the steps where an inner condition is guided too
x_t is passed in x_T's dtype; t is a (B,) (or (2B,) or (3B,)) int64 tensor on x_T's device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .clipping import apply_clip
from .errors import SamplerError
from .guidance import CFG, batch_cond, combine
from .schedule import NoiseSchedule
from .targets import x0_eps_from_prediction


class Denoiser:
    """Wraps `denoise` with conditioning, guidance, prediction-type conversion and x_0 clipping.

    Not changed after construction; every `sample` call builds its own.
    """

    def __init__(
        self,
        denoise: Callable,
        x_T: torch.Tensor,
        sched: NoiseSchedule,
        cond: Mapping | None = None,
        guidance: CFG | None = None,
        clip_x0=None,
        known=None,
    ):
        if guidance is not None and not isinstance(guidance, CFG):
            raise SamplerError(f"guidance must be a samplers.CFG, got {type(guidance).__name__}")
        if guidance is not None and cond is None:
            raise SamplerError("guidance needs the conditional input: pass sample(..., cond={...}, guidance=CFG(...))")
        if cond is not None and not isinstance(cond, Mapping):
            raise SamplerError(f"cond must be a dict of tensors, got {type(cond).__name__}")
        self.denoise = denoise
        self.sched = sched
        self.clip_x0 = clip_x0
        self.known = check_known(known, x_T)
        self.model_dtype = x_T.dtype
        self.device = x_T.device
        self.cond = cond
        self.guidance = guidance if guidance is not None and guidance.active else None
        batch = x_T.shape[0]
        self.batched_cond = batch_cond(cond, guidance.null_cond, batch) if self.guidance is not None else None
        self.inner_cond = None  # [cond; null_cond; null_cond + inner_null], when guidance has an inner term
        if self.guidance is not None and self.guidance.inner_scale != 1:
            none = batch_cond(cond, {**guidance.null_cond, **guidance.inner_null}, batch)
            self.inner_cond = {k: torch.cat([v, none[k][batch:]]) for k, v in self.batched_cond.items()}

    def predict(self, x: torch.Tensor, t: int | float) -> torch.Tensor:
        """The model's raw prediction at (x, t), guided if guidance is set, in x's dtype.

        t is a training timestep: an int (passed as int64), or a float from a diffusers
        scheduler with fractional timesteps (passed as float32).
        """
        x_in = x.to(self.model_dtype)
        t_dtype = torch.long if isinstance(t, int) else torch.float32
        if self.guidance is None:
            t_in = torch.full((x.shape[0],), t, dtype=t_dtype, device=self.device)
            out = self.denoise(x_in, t_in) if self.cond is None else self.denoise(x_in, t_in, self.cond)
            self._check(out, x_in.shape)
        else:
            inner = self.guidance.inner_at(t)
            x_in = torch.cat([x_in] * (3 if inner else 2))  # (2B or 3B, ...)
            t_in = torch.full((x_in.shape[0],), t, dtype=t_dtype, device=self.device)
            out = self.denoise(x_in, t_in, self.inner_cond if inner else self.batched_cond)
            self._check(out, x_in.shape)
            cond_out, uncond_out, *none_out = out.chunk(3 if inner else 2)
            out = combine(cond_out, uncond_out, self.guidance, *none_out)
        return out.to(x.dtype)

    def _check(self, out, expected) -> None:
        if not isinstance(out, torch.Tensor):
            raise SamplerError(f"denoise must return a tensor, got {type(out).__name__}")
        if out.shape != expected:
            raise SamplerError(
                f"denoise returned shape {tuple(out.shape)} for an input x_t of shape {tuple(expected)}; "
                f"it must return a prediction ({self.sched.prediction}) with the same shape as x_t"
            )

    def __call__(self, x: torch.Tensor, t: int, alpha_bar: float | None = None):
        """(x_0, eps) at (x, t); x_0 clipped per clip_x0 and eps made consistent with it.

        `alpha_bar` overrides the schedule's value at t (DPM-Solver++ uses this at zero SNR).
        """
        ab = self.sched.alpha_bars[t] if alpha_bar is None else alpha_bar
        a, s = ab**0.5, (1 - ab) ** 0.5
        x0, eps = x0_eps_from_prediction(self.predict(x, t), x, a, s, self.sched.prediction)
        if self.clip_x0 is not None or self.known is not None:
            # eps recomputed from the clipped x_0 (as in Ho et al.'s and guided-diffusion's DDIM)
            x0 = constrain_x0(x0, self.clip_x0, self.known)
            eps = (x - a * x0) / s
        return x0, eps


def check_known(known, x_T: torch.Tensor):
    """`known` is None or (values, mask): tensors broadcastable to x_T, mask in [0, 1]
    (1 where the value is known). Returned on x_T's device, in float."""
    if known is None:
        return None
    if not (isinstance(known, (tuple, list)) and len(known) == 2 and all(isinstance(k, torch.Tensor) for k in known)):
        raise SamplerError("known must be a pair (values, mask) of tensors, mask 1 where the value is known")
    values, mask = (k.to(device=x_T.device, dtype=torch.float32 if x_T.dtype != torch.float64 else x_T.dtype)
                    for k in known)
    for name, k in (("values", values), ("mask", mask)):
        try:
            torch.broadcast_shapes(k.shape, x_T.shape)
        except RuntimeError:
            raise SamplerError(f"known {name} of shape {tuple(k.shape)} does not broadcast to x_T's "
                               f"{tuple(x_T.shape)}") from None
    if mask.numel() and (mask.min() < 0 or mask.max() > 1):
        raise SamplerError("known mask must lie in [0, 1] (1 where the value is known)")
    return values, mask


def constrain_x0(x0: torch.Tensor, clip_x0=None, known=None) -> torch.Tensor:
    """A predicted x_0 clipped per `clip_x0`, then set to the known values where the mask is 1
    (blended where it is between): how every sampler keeps known pixels or frames."""
    x0 = apply_clip(x0, clip_x0)
    if known is not None:
        values, mask = known
        x0 = x0 + mask.to(x0.dtype) * (values.to(x0.dtype) - x0)
    return x0


__all__ = ["Denoiser", "check_known", "constrain_x0"]
