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
