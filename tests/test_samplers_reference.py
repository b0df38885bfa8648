"""Shared helpers for the samplers tests: a toy denoiser and diffusers reference loops.

It holds no tests; the other test_samplers_*.py files import it.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from samplers import NoiseSchedule

DIFFUSERS_BETAS = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
DIFFUSERS_PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
SCALED_LINEAR = {"beta_start": 0.00085, "beta_end": 0.012}  # Stable Diffusion's values


def make_schedule(kind: str, prediction: str, zero_snr: bool = False) -> NoiseSchedule:
    extra = SCALED_LINEAR if kind == "scaled_linear" else {}
    return NoiseSchedule.create(kind, prediction=prediction, zero_terminal_snr=zero_snr, **extra)


def diffusers_kwargs(sched: NoiseSchedule) -> dict:
    return {
        "num_train_timesteps": sched.num_train_timesteps,
        "beta_start": sched.beta_start,
        "beta_end": sched.beta_end,
        "beta_schedule": DIFFUSERS_BETAS[sched.beta_schedule],
        "prediction_type": DIFFUSERS_PREDICTION[sched.prediction],
        "rescale_betas_zero_snr": sched.zero_terminal_snr,
    }


def toy_denoiser(sched: NoiseSchedule, mu: torch.Tensor, s: float = 0.5, wobble: float = 0.1):
    """The exact Bayes denoiser of x_0 ~ N(mu, s^2 I), in sched's prediction type, plus a
    small nonlinear term in x and t (so a wrong timestep or coefficient shows up).

    For x_t = a x_0 + sigma eps: E[eps | x_t] = sigma (x_t - a mu) / (a^2 s^2 + sigma^2).
    """
    ab_table = sched.alphas_cumprod

    def denoise(x, t):
        ab = ab_table.to(x.device)[t.long()].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        a, sig = ab.sqrt(), (1 - ab).sqrt()
        eps = sig * (x - a * mu) / (a**2 * s**2 + sig**2)
        x0 = mu + a * s**2 * (x - a * mu) / (a**2 * s**2 + sig**2)
        pred = {"eps": eps, "v": a * eps - sig * x0, "x0": x0}[sched.prediction]
        return pred + wobble * torch.sin(3 * x + t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype) / 250)

    return denoise


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|."""
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def _t(t, x):
    return t.to(x.device).long().expand(x.shape[0])


def float64_table(sch, sched: NoiseSchedule):
    """Run a diffusers scheduler on our float64 alpha_bar table instead of its float32 one.

    diffusers builds betas and alphas_cumprod in float32. Near t = 0 that rounds
    1 - alpha_bar (about 4e-5 for the cosine schedule) to ~0.1% and moves the last
    steps of a sample by more than 1e-4, which would test float32 rounding rather than
    the sampler. The tables themselves are compared in test_samplers_schedule.py.
    DPMSolverMultistepScheduler's own zero-SNR clamp (alpha_bar_{T-1} = 2^-24, set in its
    __init__) is kept.
    """
    table = sched.alphas_cumprod.clone()
    if isinstance(sch, DPMSolverMultistepScheduler) and sch.config.rescale_betas_zero_snr:
        table[-1] = sch.alphas_cumprod[-1].double()
    sch.alphas_cumprod = table
    return sch


def safe_ddim_variance(sch):
    """Keep DDIMScheduler's eta^2 * variance a hair below 1 - alpha_bar_prev.

    Its step takes sqrt(1 - alpha_bar_prev - std^2); with eta = 1 at alpha_bar_t = 0
    (zero terminal SNR) that is sqrt of exactly 0 in exact arithmetic and of -1 ulp after
    rounding, i.e. NaN, depending on how the table rounds. We clamp that square root's
    argument at 0; here the variance is capped at (1 - alpha_bar_prev)(1 - 1e-12).
    """
    original = sch._get_variance

    def variance(timestep, prev_timestep):
        ab_prev = sch.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else sch.final_alpha_cumprod
        return original(timestep, prev_timestep).clamp(max=(1 - ab_prev) * (1 - 1e-12))

    sch._get_variance = variance
    return sch


def diffusers_ddim(sched, denoise, x, *, steps, spacing, eta, noise, clip=None, stock=False):
    """diffusers DDIMScheduler loop (its prev timestep is t - T // steps).

    stock=True keeps diffusers' float32 alpha_bar table (see float64_table).
    """
    sch = DDIMScheduler(**diffusers_kwargs(sched), timestep_spacing=spacing, set_alpha_to_one=True, **_clip(clip))
    if not stock:
        float64_table(sch, sched)
    safe_ddim_variance(sch)
    sch.set_timesteps(steps)
    for i, t in enumerate(sch.timesteps):
        out = denoise(x, _t(t, x))
        x = sch.step(out, t, x, eta=eta, variance_noise=noise[i] if eta > 0 else None,
                     use_clipped_model_output=True).prev_sample
    return x


def diffusers_ddim_on_grid(sched, denoise, x, *, timesteps, eta, noise, clip=None):
    """diffusers' DDIM step on exactly the given timesteps.

    DDIMScheduler.step takes the previous timestep as t - T // steps, which is wrong
    whenever the grid is not evenly strided ("linspace", "trailing" with T % steps != 0,
    custom lists). Here the alpha_bar table at the grid's timesteps becomes a
    schedule of len(grid) training steps, so its stride is 1 and each step goes to the
    next grid entry; the denoiser still sees the original timesteps.
    """
    grid = list(timesteps)[::-1]  # ascending
    sub = DDIMScheduler(
        num_train_timesteps=len(grid), prediction_type=DIFFUSERS_PREDICTION[sched.prediction],
        timestep_spacing="leading", set_alpha_to_one=True, **_clip(clip),
    )
    sub.alphas_cumprod = sched.alphas_cumprod[grid].clone()  # the float64 table (float64_table) on the grid
    safe_ddim_variance(sub)
    sub.set_timesteps(len(grid))
    for i, j in enumerate(sub.timesteps):
        out = denoise(x, _t(torch.tensor(grid[int(j)]), x))
        x = sub.step(out, j, x, eta=eta, variance_noise=noise[i] if eta > 0 else None,
                     use_clipped_model_output=True).prev_sample
    return x


def diffusers_ddpm(sched, denoise, x, *, timesteps, variance, noise, monkeypatch, clip=None):
    """Stock diffusers DDPMScheduler loop on the given timesteps, fed our noise list.

    DDPMScheduler draws its noise with randn_tensor whenever t > 0; that function is
    patched to hand out noise[k] on its k-th call. A draw past the last non-final step
    (diffusers adds noise on the final step when it is not t = 0, e.g. with "trailing")
    returns zeros: Ho et al. add no noise on the final step.
    """
    import diffusers.schedulers.scheduling_ddpm as ddpm_module

    calls = iter(range(10**6))

    def fake_randn(shape, generator=None, device=None, dtype=None, **_):
        k = next(calls)
        return noise[k] if k < len(timesteps) - 1 else torch.zeros(shape, dtype=dtype, device=device)

    monkeypatch.setattr(ddpm_module, "randn_tensor", fake_randn)
    sch = float64_table(DDPMScheduler(**diffusers_kwargs(sched), variance_type=variance, **_clip(clip)), sched)
    sch.set_timesteps(timesteps=list(timesteps))
    for t in sch.timesteps:
        x = sch.step(denoise(x, _t(t, x)), t, x).prev_sample
    return x


def diffusers_dpm(sched, denoise, x, *, timesteps=None, steps=None, spacing=None, clip=None, stock=False):
    """diffusers DPMSolverMultistepScheduler (DPM-Solver++ 2M, midpoint, final sigma 0).

    stock=True keeps diffusers' float32 alpha_bar table (see float64_table).
    """
    kwargs = {} if spacing is None else {"timestep_spacing": spacing}
    sch = DPMSolverMultistepScheduler(
        **diffusers_kwargs(sched), algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        final_sigmas_type="zero", **kwargs, **_clip(clip, dpm=True),
    )
    if not stock:
        float64_table(sch, sched)
    if timesteps is not None:
        sch.set_timesteps(timesteps=list(timesteps))
    else:
        sch.set_timesteps(steps)
    for t in sch.timesteps:
        x = sch.step(denoise(x, _t(t, x)), t, x).prev_sample
    return x


def _clip(clip, dpm: bool = False) -> dict:
    from samplers import DynamicThreshold

    if isinstance(clip, DynamicThreshold):
        return {"thresholding": True, "dynamic_thresholding_ratio": clip.percentile, "sample_max_value": clip.max_value}
    if dpm:
        assert clip is None, "DPMSolverMultistepScheduler has no static clip"
        return {}
    return {"clip_sample": clip is not None, "clip_sample_range": 1.0 if clip is None else float(clip)}
