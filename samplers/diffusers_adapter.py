"""Run any diffusers scheduler with our denoisers: `sample(..., method="diffusers:UniPCMultistepScheduler")`.

diffusers is imported lazily, only here. The scheduler is built from our NoiseSchedule
(beta schedule, prediction type, zero terminal SNR) plus the call's spacing and clipping;
a fresh instance per call keeps `sample` stateless even though diffusers' schedulers are
not. x_0 clipping or dynamic thresholding that a scheduler has no option for (UniPC,
Euler, DPM-Solver++ have no clip_sample), and known values (`known=`), are applied here,
on the model's prediction: the x_0 it implies is clipped or set and the prediction
recomputed from it, as DDIM's clip_sample does. A schedule a scheduler cannot represent (zero terminal SNR without
rescale_betas_zero_snr, a spacing without timestep_spacing, a scheduler that is not for
a discrete noise schedule) is refused, naming why. Guidance, the callback and the calling
rule for `denoise` are the same as for the built-in methods. Schedulers with fractional
timesteps (e.g. Euler with "linspace") hand the denoiser a float32 t; x_0 previews reach
the callback where the scheduler's step returns pred_original_sample, else None.
"""

from __future__ import annotations

import inspect

from .clipping import DynamicThreshold
from .errors import SamplerError, unknown_name

_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
_PREDICTION_TYPE = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def scheduler_class(name: str):
    """The diffusers scheduler class called `name`; unknown names list the available ones."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        known = sorted(
            n for n in dir(diffusers)
            if n.endswith("Scheduler") and isinstance(getattr(diffusers, n, None), type)
            and issubclass(getattr(diffusers, n), diffusers.SchedulerMixin)
        )  # fmt: skip
        raise unknown_name("diffusers scheduler", name, known)
    return cls


def diffusers_config(sched, spacing: str | None = None, clip_x0=None) -> dict:
    """Our schedule (and the call's spacing / clipping) as diffusers scheduler kwargs."""
    config = {
        "num_train_timesteps": sched.num_train_timesteps,
        "beta_start": sched.beta_start,
        "beta_end": sched.beta_end,
        "beta_schedule": _BETA_SCHEDULE[sched.beta_schedule],
        "prediction_type": _PREDICTION_TYPE[sched.prediction],
        "rescale_betas_zero_snr": sched.zero_terminal_snr,
        "timestep_spacing": spacing or "leading",
        "set_alpha_to_one": True,
        "clip_sample": clip_x0 is not None and not isinstance(clip_x0, DynamicThreshold),
        "thresholding": isinstance(clip_x0, DynamicThreshold),
    }
    if isinstance(clip_x0, DynamicThreshold):
        config.update(dynamic_thresholding_ratio=clip_x0.percentile, sample_max_value=clip_x0.max_value)
    elif clip_x0 is not None:
        config.update(clip_sample_range=float(clip_x0))
    return config


def build_scheduler(name: str, sched, spacing: str | None = None, clip_x0=None):
    """A fresh diffusers scheduler `name` configured for `sched`, and the clipping it leaves
    to the caller (`clip_x0` where the scheduler has no option for it, else None)."""
    cls = scheduler_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    if "beta_schedule" not in accepted and "trained_betas" not in accepted:
        raise SamplerError(f"diffusers' {name} is not for a discrete diffusion noise schedule (it takes no "
                           f"beta_schedule), so it cannot run a model trained on one")
    sigmas = None
    if spacing in ("karras", "exponential"):  # diffusers spaces its sigmas itself, where it can
        sigmas, spacing = f"use_{spacing}_sigmas", None
        if sigmas not in accepted:
            raise SamplerError(f"diffusers' {name} has no {sigmas} option, so it cannot space its steps that way")
    config = diffusers_config(sched, spacing, clip_x0)
    if sigmas is not None:
        config[sigmas] = True
    needed = {
        "prediction_type": sched.prediction != "eps",
        "rescale_betas_zero_snr": sched.zero_terminal_snr,
        "timestep_spacing": spacing is not None,
    }
    why = {"prediction_type": f"the model predicts {sched.prediction}",
           "rescale_betas_zero_snr": "the schedule has zero terminal SNR", "timestep_spacing": f"spacing {spacing!r}"}
    missing = [key for key, wanted in needed.items() if wanted and key not in accepted]
    if missing:
        raise SamplerError(f"diffusers' {name} cannot represent this schedule: it has no "
                           f"{', '.join(missing)} option ({'; '.join(why[k] for k in missing)})")
    option = "thresholding" if isinstance(clip_x0, DynamicThreshold) else "clip_sample"
    leftover = clip_x0 if clip_x0 is not None and option not in accepted else None
    if leftover is not None:
        config.update(clip_sample=False, thresholding=False)
    try:
        return cls(**{k: v for k, v in config.items() if k in accepted}), leftover
    except (NotImplementedError, ValueError) as err:
        raise SamplerError(f"diffusers' {name} cannot be built for this schedule: {err}") from err


def constrained_prediction(pred, x_t, t, sched, clip_x0=None, known=None):
    """The prediction whose x_0 is clipped per `clip_x0` and holds the `known` values, at x_t
    and (possibly fractional) t."""
    import math

    from .denoiser import constrain_x0
    from .targets import prediction_from_x0_eps, x0_eps_from_prediction

    if float(t).is_integer():
        ab = float(sched.alpha_bars[int(t)])
    else:  # between timesteps: sigma interpolated linearly in t, as diffusers' Euler does
        lo = math.floor(t)
        sig = [((1 - float(sched.alpha_bars[k])) / max(float(sched.alpha_bars[k]), 1e-30)) ** 0.5 for k in (lo, lo + 1)]
        sigma = sig[0] + (sig[1] - sig[0]) * (t - lo)
        ab = 1 / (1 + sigma**2)
    a, s = ab**0.5, (1 - ab) ** 0.5
    x0, eps = x0_eps_from_prediction(pred, x_t, a, s, sched.prediction)
    x0 = constrain_x0(x0, clip_x0, known)
    eps = (x_t - a * x0) / s
    return prediction_from_x0_eps(x0, eps, a, s, sched.prediction)


def sample_with_diffusers(
    model, x, name, *, steps, spacing, timesteps, eta, clip_x0, generator, noise, explicit_noise, on_step
):
    """The sampling loop of a diffusers pipeline around `model` (a samplers Denoiser)."""
    scheduler, own_clip = build_scheduler(name, model.sched, spacing, clip_x0)
    try:
        if timesteps is not None:
            scheduler.set_timesteps(timesteps=[int(t) for t in timesteps], device=x.device)
        else:
            scheduler.set_timesteps(50 if steps is None else steps, device=x.device)
    except TypeError:
        raise SamplerError(f"diffusers' {name} does not accept custom timesteps; pass steps instead") from None
    step_params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if eta != 0:
        if "eta" not in step_params:
            raise SamplerError(f"diffusers' {name} has no eta; use eta=0")
        kwargs["eta"] = eta
    use_noise = explicit_noise and "variance_noise" in step_params
    if generator is not None and "generator" in step_params:
        kwargs["generator"] = generator
    x = x * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        t_value = float(t)
        t_model = int(t_value) if t_value.is_integer() else t_value
        x_in = scheduler.scale_model_input(x, t)
        pred = model.predict(x_in, t_model)
        if own_clip is not None or model.known is not None:
            pred = constrained_prediction(pred, x_in, t_value, model.sched, own_clip, model.known)
        if use_noise:
            kwargs["variance_noise"] = noise(i, x)
        out = scheduler.step(pred, t, x, **kwargs)
        x = out.prev_sample
        if on_step(i, t_model, x, getattr(out, "pred_original_sample", None)):
            break
    return x


__all__ = ["build_scheduler", "constrained_prediction", "diffusers_config", "sample_with_diffusers", "scheduler_class"]
