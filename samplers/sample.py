"""`sample`: the one entry point from a denoiser and x_T to a finished sample."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from .clipping import check_clip
from .ddim import ddim
from .ddpm import VARIANCES, ddpm
from .denoiser import Denoiser
from .dpm_solver import dpm_solver_2m
from .errors import SamplerError, unknown_name
from .guidance import CFG
from .heun import heun
from .schedule import NoiseSchedule
from .timesteps import check_timesteps, make_timesteps

METHODS = {"ddpm": ddpm, "ddim": ddim, "dpm++2m": dpm_solver_2m, "heun": heun}
DIFFUSERS_PREFIX = "diffusers:"


def sample(
    denoise: Callable,
    x_T: torch.Tensor,
    sched: NoiseSchedule,
    *,
    method: str = "ddim",
    steps: int | None = None,
    spacing: str | None = None,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
    variance: str = "fixed_small",
    clip_x0=None,
    cond: Mapping[str, torch.Tensor] | None = None,
    guidance: CFG | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    noise: Sequence[torch.Tensor] | Callable[[int], torch.Tensor] | None = None,
    callback: Callable | None = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Denoise x_T ~ N(0, I) into a sample with a denoiser trained on `sched`.

    Args:
        denoise: the model, called as denoise(x_t, t) or, when `cond` is given,
            denoise(x_t, t, cond); t is a (B,) int64 tensor of training timesteps and the
            return value is the prediction of type sched.prediction, shaped like x_t.
        x_T: the starting noise, any rank with batch first (images, videos, latents).
        sched: the noise schedule (and prediction type) the denoiser was trained with.
        method: "ddim", "ddpm", "dpm++2m" (DPM-Solver++ 2M), "heun", or
            "diffusers:<SchedulerClass>" to run a diffusers scheduler (diffusers_adapter.py).
        steps: number of sampling steps, 1 .. T (default 50).
        spacing: "leading" (default), "trailing", "linspace", or the schedule's noise levels
            spaced as Karras et al. ("karras") or log-uniformly ("exponential"); see timesteps.py.
        timesteps: a custom strictly descending list of training timesteps; replaces
            `steps` and `spacing`.
        eta: DDIM's stochasticity in [0, 1] (0 = deterministic); "ddim" only (and
            diffusers schedulers whose step takes eta).
        variance: DDPM's "fixed_small" (beta tilde) or "fixed_large" (beta); "ddpm" only.
        clip_x0: None, a range r (clamp x_0 to [-r, r]) or DynamicThreshold(...) for pixel models.
        cond: the conditioning dict passed to `denoise`.
        guidance: CFG(scale, null_cond, rescale) for classifier-free guidance; needs `cond`.
        generator: torch.Generator (or one per batch element) for the stochastic steps.
        noise: explicit noise for stochastic steps instead of drawing it: a sequence
            indexed by step (entry i is used at step i) or a callable i -> tensor.
        callback: called after every step as callback(i, t, x_t, x0_pred) with the step
            index, its timestep, the new state and that step's x_0 prediction. Returning
            False stops sampling early; `sample` then returns that x_t.
        known: (values, mask), broadcastable to x_T, mask 1 where the clean value is known:
            every step's x_0 prediction is set to the values there (and eps recomputed from
            it, as for clipping), so the sample ends on them and the rest is drawn around
            them (inpainting, known frames). Every method, diffusers' schedulers included.

    Returns:
        The sample, in x_T's dtype and on its device. Stateless and deterministic given
        `generator` (or `noise`): safe to call from many threads at once.
    """
    if not isinstance(sched, NoiseSchedule):
        raise SamplerError(f"sched must be a samplers.NoiseSchedule, got {type(sched).__name__}")
    if not isinstance(x_T, torch.Tensor) or not x_T.dtype.is_floating_point or x_T.dim() < 1 or x_T.shape[0] < 1:
        raise SamplerError(f"x_T must be a floating-point tensor with a batch dimension, got {_describe(x_T)}")
    if not isinstance(method, str) or (method not in METHODS and not method.startswith(DIFFUSERS_PREFIX)):
        raise unknown_name("method", method, [*METHODS, DIFFUSERS_PREFIX + "<SchedulerClass>"])
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise SamplerError(f"eta must be a number between 0 and 1 (0 = deterministic DDIM), got {eta!r}")
    if eta != 0 and method != "ddim" and not method.startswith(DIFFUSERS_PREFIX):
        raise SamplerError(f"eta only applies to method 'ddim', got eta={eta} with method {method!r}")
    if variance not in VARIANCES:
        raise unknown_name("DDPM variance", variance, VARIANCES)
    if variance != "fixed_small" and method != "ddpm":
        raise SamplerError(f"variance only applies to method 'ddpm', got variance={variance!r} with {method!r}")
    if callback is not None and not callable(callback):
        raise SamplerError(f"callback must be callable or None, got {type(callback).__name__}")
    check_clip(clip_x0)
    if timesteps is not None:
        if steps is not None or spacing is not None:
            raise SamplerError("pass either timesteps=[...] or steps/spacing, not both")
        ts = check_timesteps(timesteps, sched.num_train_timesteps)
    else:
        ts = make_timesteps(sched.num_train_timesteps, 50 if steps is None else steps, spacing or "leading", sched)

    work_dtype = torch.float32 if x_T.dtype in (torch.float16, torch.bfloat16) else x_T.dtype
    x = x_T.to(work_dtype)
    draw = _noise_source(noise, generator, x)

    def on_step(i, t, x_t, x0) -> bool:
        return callback is not None and callback(i, t, x_t, x0) is False

    if method.startswith(DIFFUSERS_PREFIX):
        from .diffusers_adapter import sample_with_diffusers

        model = Denoiser(denoise, x_T, sched, cond, guidance, clip_x0=None, known=known)
        x = sample_with_diffusers(
            model, x, method[len(DIFFUSERS_PREFIX) :], steps=steps, spacing=spacing,
            timesteps=None if timesteps is None else ts, eta=eta, clip_x0=clip_x0, generator=generator,
            noise=draw, explicit_noise=noise is not None, on_step=on_step,
        )  # fmt: skip
    else:
        model = Denoiser(denoise, x_T, sched, cond, guidance, clip_x0, known)
        options = {"eta": eta} if method == "ddim" else {"variance": variance} if method == "ddpm" else {}
        x = METHODS[method](model, x, ts, noise=draw, on_step=on_step, **options)
    return x.to(x_T.dtype)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _noise_source(noise, generator, like: torch.Tensor) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """draw(i, x) -> the standard normal noise for step i, shaped like x."""
    shape = tuple(like.shape)

    def checked(i: int, value) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            raise SamplerError(f"noise for step {i} must be a tensor of shape {shape}, got {_describe(value)}")
        return value.to(device=like.device, dtype=like.dtype)

    if noise is not None:
        if generator is not None:
            raise SamplerError("pass either noise or generator, not both")
        if callable(noise):
            return lambda i, x: checked(i, noise(i))
        if isinstance(noise, Sequence):
            def from_list(i, x):
                if i >= len(noise):
                    raise SamplerError(f"noise has {len(noise)} entries but step {i} needs one; give one per step")
                return checked(i, noise[i])

            return from_list
        raise SamplerError(f"noise must be a sequence of tensors or a callable, got {type(noise).__name__}")
    if generator is None:
        return lambda i, x: torch.randn(shape, device=x.device, dtype=x.dtype)
    if isinstance(generator, torch.Generator):
        return lambda i, x: torch.randn(shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    generators = list(generator)
    if len(generators) != shape[0] or not all(isinstance(g, torch.Generator) for g in generators):
        raise SamplerError(f"generator must be a torch.Generator or a list of {shape[0]} (one per batch element)")
    return lambda i, x: torch.cat(
        [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=x.dtype) for g in generators]
    ).to(x.device)


__all__ = ["METHODS", "sample"]
