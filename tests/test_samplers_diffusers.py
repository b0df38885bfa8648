"""Our samplers against diffusers' DDPMScheduler / DDIMScheduler / DPMSolverMultistepScheduler.

Same denoiser, same x_T, same noise; every schedule x prediction type (zero terminal
SNR with v and x0: eps cannot be used there) x spacing, eta in {0, 0.5, 1}, both DDPM
variances, 4-D images and 5-D videos; the final samples agree to 1e-4 relative
(max |ours - theirs| / max |theirs|). The reference loops live in test_samplers_reference.py.
Where diffusers has a known bug the reference is corrected and a test below shows the bug.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler
from test_samplers_reference import (
    diffusers_ddim,
    diffusers_ddim_on_grid,
    diffusers_ddpm,
    diffusers_dpm,
    make_schedule,
    rel_err,
    toy_denoiser,
)

from samplers import DynamicThreshold, make_timesteps, sample

# diffusers' schedulers trip numpy 2 deprecation warnings in their own code.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")
TOL = 1e-4
STEPS = 10
SCHEDULES = [
    (kind, pred, zero_snr)
    for kind in ("linear", "scaled_linear", "cosine")
    for pred, zero_snr in (("eps", False), ("v", False), ("x0", False), ("v", True), ("x0", True))
]
SHAPES = {4: (2, 3, 4, 4), 5: (2, 3, 2, 4, 4)}


def setup(kind, pred, zero_snr, rank, seed=0):
    sched = make_schedule(kind, pred, zero_snr)
    shape = SHAPES[rank]
    gen = torch.Generator().manual_seed(seed)
    mu = torch.linspace(-1.2, 1.2, int(torch.tensor(shape[1:]).prod())).reshape(shape[1:])
    x_T = torch.randn(shape, generator=gen)
    noise = [torch.randn(shape, generator=gen) for _ in range(64)]
    return sched, toy_denoiser(sched, mu), x_T, noise


@pytest.mark.parametrize("rank", [4, 5])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("kind,pred,zero_snr", SCHEDULES)
def test_ddim_matches_diffusers(kind, pred, zero_snr, spacing, rank):
    sched, f, x_T, noise = setup(kind, pred, zero_snr, rank)
    for eta in (0.0, 0.5, 1.0):
        ours = sample(f, x_T, sched, method="ddim", steps=STEPS, spacing=spacing, eta=eta, noise=noise)
        if spacing == "linspace":  # diffusers' fixed-stride previous timestep is wrong here, see below
            ts = make_timesteps(1000, STEPS, spacing)
            ref = diffusers_ddim_on_grid(sched, f, x_T, timesteps=ts, eta=eta, noise=noise)
        else:
            ref = diffusers_ddim(sched, f, x_T, steps=STEPS, spacing=spacing, eta=eta, noise=noise)
        assert rel_err(ours, ref) < TOL, (eta, rel_err(ours, ref))


@pytest.mark.parametrize("rank", [4, 5])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("kind,pred,zero_snr", SCHEDULES)
def test_ddpm_matches_diffusers(kind, pred, zero_snr, spacing, rank, monkeypatch):
    sched, f, x_T, noise = setup(kind, pred, zero_snr, rank)
    ts = make_timesteps(1000, STEPS, spacing)
    for variance in ("fixed_small", "fixed_large"):
        ours = sample(f, x_T, sched, method="ddpm", steps=STEPS, spacing=spacing, variance=variance, noise=noise)
        ref = diffusers_ddpm(sched, f, x_T, timesteps=ts, variance=variance, noise=noise, monkeypatch=monkeypatch)
        assert rel_err(ours, ref) < TOL, (variance, rel_err(ours, ref))


@pytest.mark.parametrize("rank", [4, 5])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("kind,pred,zero_snr", SCHEDULES)
def test_dpm_solver_2m_matches_diffusers(kind, pred, zero_snr, spacing, rank):
    """DPMSolverMultistepScheduler's own "linspace"/"leading" grids are N + 1 points with
    the last dropped; ours are the DDIM grids of Lin et al. Table 2 for every method, so
    diffusers is handed our timesteps. "trailing" is the same in both (also checked)."""
    sched, f, x_T, _ = setup(kind, pred, zero_snr, rank)
    ours = sample(f, x_T, sched, method="dpm++2m", steps=STEPS, spacing=spacing)
    ref = diffusers_dpm(sched, f, x_T, timesteps=make_timesteps(1000, STEPS, spacing))
    assert rel_err(ours, ref) < TOL
    if spacing == "trailing":
        assert rel_err(ours, diffusers_dpm(sched, f, x_T, steps=STEPS, spacing="trailing")) < TOL


def test_stock_diffusers_float32_tables():
    """Without swapping in our float64 alpha_bar table (test_samplers_reference.float64_table),
    the common configurations still agree to 1e-4."""
    sched, f, x_T, noise = setup("scaled_linear", "eps", False, 4)
    for eta in (0.0, 1.0):  # Stable Diffusion 1.x / 2.x-base
        ours = sample(f, x_T, sched, method="ddim", steps=50, eta=eta, noise=noise)
        assert rel_err(ours, diffusers_ddim(sched, f, x_T, steps=50, spacing="leading", eta=eta, noise=noise, stock=True)) < TOL
    sched, f, x_T, _ = setup("scaled_linear", "v", True, 5)  # zero-SNR v-prediction video model
    ours = sample(f, x_T, sched, method="dpm++2m", steps=25, spacing="trailing")
    assert rel_err(ours, diffusers_dpm(sched, f, x_T, steps=25, spacing="trailing", stock=True)) < TOL


@pytest.mark.parametrize("method", ["ddim", "ddpm", "dpm++2m"])
def test_custom_timesteps_match_diffusers(method, monkeypatch):
    sched, f, x_T, noise = setup("linear", "v", False, 4)
    ts = [999, 850, 600, 420, 300, 111, 37, 5]
    ours = sample(f, x_T, sched, method=method, timesteps=ts, noise=noise if method != "dpm++2m" else None)
    if method == "ddim":
        ref = diffusers_ddim_on_grid(sched, f, x_T, timesteps=ts, eta=0.0, noise=noise)
    elif method == "ddpm":
        ref = diffusers_ddpm(sched, f, x_T, timesteps=ts, variance="fixed_small", noise=noise, monkeypatch=monkeypatch)
    else:
        ref = diffusers_dpm(sched, f, x_T, timesteps=ts)
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("clip", [1.0, DynamicThreshold(0.9, 1.5), DynamicThreshold()])
def test_clipping_matches_diffusers(clip, monkeypatch):
    """clip_x0 = r is diffusers' clip_sample with clip_sample_range r and, for DDIM,
    use_clipped_model_output=True (eps recomputed from the clipped x_0, as in Ho et al.'s
    and guided-diffusion's DDIM); DynamicThreshold is diffusers' thresholding."""
    sched, f, x_T, noise = setup("linear", "x0", False, 4)
    f2 = lambda x, t: 1.6 * f(x, t)  # noqa: E731 - push x_0 out of range so clipping acts
    for eta in (0.0, 0.5):
        ours = sample(f2, x_T, sched, method="ddim", steps=STEPS, eta=eta, noise=noise, clip_x0=clip)
        ref = diffusers_ddim(sched, f2, x_T, steps=STEPS, spacing="leading", eta=eta, noise=noise, clip=clip)
        assert rel_err(ours, ref) < TOL
        assert rel_err(sample(f2, x_T, sched, method="ddim", steps=STEPS, eta=eta, noise=noise), ref) > 1e-2
    ts = make_timesteps(1000, STEPS, "leading")
    ours = sample(f2, x_T, sched, method="ddpm", steps=STEPS, noise=noise, clip_x0=clip)
    ref = diffusers_ddpm(sched, f2, x_T, timesteps=ts, variance="fixed_small", noise=noise, monkeypatch=monkeypatch, clip=clip)
    assert rel_err(ours, ref) < TOL
    if isinstance(clip, DynamicThreshold):
        ours = sample(f2, x_T, sched, method="dpm++2m", steps=STEPS, clip_x0=clip)
        assert rel_err(ours, diffusers_dpm(sched, f2, x_T, timesteps=ts, clip=clip)) < TOL


# -- diffusers bugs we deliberately do not reproduce ------------------------------------------


@pytest.mark.parametrize("spacing,steps", [("linspace", 10), ("trailing", 7)])
def test_diffusers_ddim_fixed_stride_bug(spacing, steps):
    """DDIMScheduler.step uses prev = t - T // steps. For "linspace" (999, 888, ..., 0 at
    10 steps: gaps of 111, stride 100) and "trailing" with T % steps != 0 that is not the
    next timestep of the sequence, so each step lands on a noise level the sampler never
    visits. We look the previous timestep up in the sequence: we match diffusers' own
    step run on the exact grid, and differ from the stock scheduler."""
    sched, f, x_T, noise = setup("linear", "eps", False, 4)
    ours = sample(f, x_T, sched, method="ddim", steps=steps, spacing=spacing)
    grid = diffusers_ddim_on_grid(sched, f, x_T, timesteps=make_timesteps(1000, steps, spacing), eta=0.0, noise=noise)
    stock = diffusers_ddim(sched, f, x_T, steps=steps, spacing=spacing, eta=0.0, noise=noise, stock=True)
    assert rel_err(ours, grid) < TOL
    assert rel_err(ours, stock) > 1e-3


def test_ddpm_adds_no_noise_on_the_final_step():
    """DDPMScheduler adds noise whenever t > 0, so with "trailing" (last t = 99 at 10 steps)
    and "fixed_large" the returned sample carries noise of std sqrt(beta) ~ 0.1. Ho et al.
    (Algorithm 2) take the mean on the last step; we do, whatever the spacing, so the
    noise entry for the last step is never used."""
    sched, f, x_T, noise = setup("linear", "eps", False, 4)
    other = noise[:STEPS - 1] + [100 * torch.ones_like(noise[0])]
    a = sample(f, x_T, sched, method="ddpm", steps=STEPS, spacing="trailing", variance="fixed_large", noise=noise)
    b = sample(f, x_T, sched, method="ddpm", steps=STEPS, spacing="trailing", variance="fixed_large", noise=other)
    assert torch.equal(a, b)


def test_diffusers_trailing_timestep_count_bug():
    """np.arange with a float step makes DDIMScheduler's "trailing" grid one entry too long
    for 62 step counts (e.g. 61 -> 62 timesteps ending in -1, which indexes alpha_bar[-1],
    the noisiest level). Our grids are exact: always `steps` timesteps in [0, T-1]."""
    sch = DDIMScheduler(timestep_spacing="trailing")
    sch.set_timesteps(61)
    assert len(sch.timesteps) == 62 and int(sch.timesteps[-1]) == -1
    ours = make_timesteps(1000, 61, "trailing")
    assert len(ours) == 61 and ours[-1] >= 0
