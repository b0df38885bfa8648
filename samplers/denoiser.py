"""The samplers' single view of the user's model: (x_t, t) -> (x_0, eps).

Calling rule for the user's `denoise`:
    no cond, no guidance   denoise(x_t, t)
    cond given             denoise(x_t, t, cond)
    guidance given         denoise(x_t, t, cond) once per step on 2B rows: x_t and t
                           duplicated, cond batched as [cond; null_cond] (see guidance.py)
x_t is passed in x_T's dtype; t is a (B,) (or (2B,)) int64 tensor on x_T's device.
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
        self.model_dtype = x_T.dtype
        self.device = x_T.device
        self.cond = cond
        self.guidance = guidance if guidance is not None and guidance.scale != 1 else None
        batch = x_T.shape[0]
        self.batched_cond = batch_cond(cond, guidance.null_cond, batch) if self.guidance is not None else None

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
            x_in = torch.cat([x_in, x_in])  # (2B, ...)
            t_in = torch.full((x_in.shape[0],), t, dtype=t_dtype, device=self.device)
            out = self.denoise(x_in, t_in, self.batched_cond)
            self._check(out, x_in.shape)
            cond_out, uncond_out = out.chunk(2)
            out = combine(cond_out, uncond_out, self.guidance)
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
        if self.clip_x0 is not None:
            # eps recomputed from the clipped x_0 (as in Ho et al.'s and guided-diffusion's DDIM)
            x0 = apply_clip(x0, self.clip_x0)
            eps = (x - a * x0) / s
        return x0, eps


__all__ = ["Denoiser"]
