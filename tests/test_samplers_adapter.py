"""method="diffusers:<SchedulerClass>": diffusers' schedulers driven by our denoisers."""

from __future__ import annotations

import pytest
import torch
from test_samplers_reference import make_schedule, rel_err, toy_denoiser

from samplers import CFG, SamplerError, sample

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")
MU = torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 4, 1)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_diffusers_ddim_through_the_adapter_equals_ours(eta):
    sched = make_schedule("scaled_linear", "eps")
    f = toy_denoiser(sched, MU)
    x_T = torch.randn(2, 4, 8)
    noise = [torch.randn(2, 4, 8) for _ in range(20)]
    theirs = sample(f, x_T, sched, method="diffusers:DDIMScheduler", steps=20, eta=eta, noise=noise)
    ours = sample(f, x_T, sched, method="ddim", steps=20, eta=eta, noise=noise)
    assert rel_err(ours, theirs) < 1e-4


def test_diffusers_dpm_through_the_adapter_equals_ours():
    sched = make_schedule("linear", "v", zero_snr=True)
    f = toy_denoiser(sched, MU)
    x_T = torch.randn(2, 4, 8)
    theirs = sample(f, x_T, sched, method="diffusers:DPMSolverMultistepScheduler", steps=15, spacing="trailing")
    ours = sample(f, x_T, sched, method="dpm++2m", steps=15, spacing="trailing")
    assert rel_err(ours, theirs) < 1e-4


@pytest.mark.parametrize(
    "name,std_tol", [("UniPCMultistepScheduler", 0.06), ("DEISMultistepScheduler", 0.06), ("EulerDiscreteScheduler", 0.16)]
)
def test_other_schedulers_sample_a_gaussian(name, std_tol):
    """Euler (first order, like DDIM: ~14 % low in std at 20 steps) needs init_noise_sigma
    and scale_model_input; all get integer timesteps with "trailing"."""
    sched = make_schedule("linear", "eps")
    seen = set()

    def f(x, t):
        seen.add(t.dtype)
        return toy_denoiser(sched, MU, 0.5, wobble=0.0)(x, t)

    x = sample(f, torch.randn(512, 4, 16), sched, method=f"diffusers:{name}", steps=20, spacing="trailing")
    assert seen == {torch.long}
    assert (x.mean(dim=(0, 2)) - MU.flatten()).abs().max() < 0.02
    assert (x.std(dim=(0, 2)) / 0.5 - 1).abs().max() < std_tol


def test_adapter_passes_guidance_callback_and_custom_timesteps():
    sched = make_schedule("linear", "eps")
    calls, steps = [], []

    def f(x, t, cond):
        calls.append(x.shape[0])
        return 0.1 * x + cond["label"].view(-1, 1, 1)

    cond = {"label": torch.ones(2)}
    sample(f, torch.randn(2, 4, 8), sched, method="diffusers:DDPMScheduler", timesteps=[900, 500, 100],
           cond=cond, guidance=CFG(3.0, {"label": torch.zeros(1)}), generator=torch.Generator().manual_seed(0),
           callback=lambda i, t, x, x0: steps.append((i, t, x0 is not None)))  # fmt: skip
    assert calls == [4, 4, 4] and steps == [(0, 900, True), (1, 500, True), (2, 100, True)]


def test_adapter_errors():
    sched = make_schedule("linear", "eps")
    x_T = torch.randn(2, 4, 8)
    with pytest.raises(SamplerError, match="unknown diffusers scheduler 'NopeScheduler'.*'DDIMScheduler'"):
        sample(lambda x, t: x, x_T, sched, method="diffusers:NopeScheduler")
    with pytest.raises(SamplerError, match="has no eta"):
        sample(lambda x, t: x, x_T, sched, method="diffusers:UniPCMultistepScheduler", eta=0.5)
    with pytest.raises(SamplerError, match="does not accept custom timesteps"):
        sample(lambda x, t: x, x_T, sched, method="diffusers:PNDMScheduler", timesteps=[900, 100])


@pytest.mark.parametrize("clip", [None, 1.0])
def test_euler_is_ddim_with_the_clipping_euler_lacks_done_by_the_adapter(clip):
    """Deterministic DDIM is Euler's method on x_t / a in sigma (Karras et al. 2022, sec. 3),
    so diffusers' Euler (which has no clip_sample) must equal our DDIM step for step, with
    x_0 clipped the same way when the adapter clips for it."""
    sched = make_schedule("linear", "v")
    f = toy_denoiser(sched, MU * 2)  # x_0 near 4: the clip bites
    x_T = torch.randn(2, 4, 8, dtype=torch.float64)
    theirs = sample(f, x_T, sched, method="diffusers:EulerDiscreteScheduler", steps=12, spacing="trailing",
                    clip_x0=clip)
    ours = sample(f, x_T, sched, method="ddim", steps=12, spacing="trailing", clip_x0=clip)
    assert rel_err(ours, theirs) < 1e-4  # diffusers keeps its sigmas in float32
    if clip is not None:
        unclipped = sample(f, x_T, sched, method="ddim", steps=12, spacing="trailing")
        assert rel_err(unclipped, theirs) > 0.1 and theirs.abs().max() <= 1 + 1e-6


def test_schedules_a_scheduler_cannot_represent_are_refused_naming_why():
    x_T = torch.randn(2, 4, 8)
    zero_snr = make_schedule("linear", "v", zero_snr=True)
    with pytest.raises(SamplerError, match="HeunDiscreteScheduler cannot represent this schedule: it has no "
                                           "rescale_betas_zero_snr option \\(the schedule has zero terminal SNR\\)"):
        sample(lambda x, t: x, x_T, zero_snr, method="diffusers:HeunDiscreteScheduler")
    with pytest.raises(SamplerError, match="no timestep_spacing option \\(spacing 'trailing'\\)"):
        sample(lambda x, t: x, x_T, make_schedule("linear", "eps"), method="diffusers:DPMSolverSinglestepScheduler",
               spacing="trailing")
    with pytest.raises(SamplerError, match="FlowMatchEulerDiscreteScheduler is not for a discrete diffusion"):
        sample(lambda x, t: x, x_T, zero_snr, method="diffusers:FlowMatchEulerDiscreteScheduler")


@pytest.fixture(scope="module")
def shipped_base():
    from gen.pipeline import Pipeline

    pipe = Pipeline.from_pretrained("toy-image-dit-ft")  # the shipped text-to-image model (v, cosine, clip 1)
    pipe.precision = "fp32"
    return pipe, _draw(pipe, "dpm++2m", 30)


def _draw(pipe, sampler, steps):
    return pipe.generate(["a red ball"], [0], steps=steps, sampler=sampler)


def test_diffusers_schedulers_on_the_shipped_model(shipped_base):
    """Each scheduler the README offers runs the shipped model with its own schedule and
    clipping: Euler is our DDIM and DPM-Solver++ multistep our dpm++2m (step for step),
    UniPC lands as near a 30-step solve as our dpm++2m at the same steps, Euler ancestral
    draws a valid image from the same distribution's neighbourhood."""
    pipe, reference = shipped_base

    def off(x):
        return (x - reference).abs().mean().item()

    torch.testing.assert_close(_draw(pipe, "diffusers:EulerDiscreteScheduler", 10), _draw(pipe, "ddim", 10),
                               atol=2e-2, rtol=0)  # diffusers keeps its sigmas in float32
    ours = _draw(pipe, "dpm++2m", 8)
    torch.testing.assert_close(_draw(pipe, "diffusers:DPMSolverMultistepScheduler", 8), ours, atol=2e-2, rtol=0)
    assert off(_draw(pipe, "diffusers:UniPCMultistepScheduler", 8)) < 1.25 * off(ours)
    ancestral = _draw(pipe, "diffusers:EulerAncestralDiscreteScheduler", 10)
    assert ancestral.abs().max() <= 1 and off(ancestral) < 0.6


@pytest.mark.xfail(strict=True, reason="diffusers' HeunDiscreteScheduler diverges on the cosine schedule's trailing "
                   "timesteps (measured: 8x the data's std on a Gaussian where gen's heun is within 8%); "
                   "gen's own heun is the one to use")
def test_diffusers_heun_on_the_shipped_model(shipped_base):
    pipe, reference = shipped_base
    assert (_draw(pipe, "diffusers:HeunDiscreteScheduler", 5) - reference).abs().mean() < 0.6


@pytest.mark.parametrize("method", ["dpm++2m", "diffusers:DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("spacing", ["karras", "exponential"])
def test_sigma_spacings_help_a_second_order_solver(method, spacing):
    """At 15 steps, DPM-Solver++ on noise levels spaced as Karras et al. or log-uniformly
    gets a Gaussian's spread several times closer than on trailing timesteps (measured
    0.03 / 0.02 against 0.12), ours and diffusers' alike."""
    sched = make_schedule("scaled_linear", "eps")
    f = toy_denoiser(sched, MU, 0.5, wobble=0.0)

    def std_error(spacing):
        x = sample(f, torch.randn(512, 4, 16, generator=torch.Generator().manual_seed(0)), sched, method=method,
                   steps=15, spacing=spacing)
        assert (x.mean(dim=(0, 2)) - MU.flatten()).abs().max() < 0.1
        return (x.std(dim=(0, 2)) / 0.5 - 1).abs().max().item()

    assert std_error(spacing) < std_error("trailing") / 2.5
