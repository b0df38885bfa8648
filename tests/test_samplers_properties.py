"""Properties with closed-form answers: the forward process, target conversions, loss
weights, DDIM determinism and invertibility, and sampling a Gaussian exactly."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDPMScheduler
from diffusers.training_utils import compute_snr
from test_samplers_reference import diffusers_kwargs, make_schedule, toy_denoiser

from samplers import PREDICTIONS, SamplerError, convert_prediction, loss_weights, q_sample, sample, training_target

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")


def _data(shape=(4, 3, 2, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_q_sample_at_t0_is_almost_identity():
    x0, noise = _data()
    for kind in ("linear", "scaled_linear", "cosine"):
        sched = make_schedule(kind, "eps")
        x_t = q_sample(x0, torch.zeros(4, dtype=torch.long), noise, sched)
        s = (1 - sched.alpha_bars[0]) ** 0.5  # 0.01 for linear, 0.029 for scaled_linear
        assert s < 0.03
        torch.testing.assert_close(x_t, x0, atol=4 * s * noise.abs().max().item(), rtol=0)


@pytest.mark.parametrize("pred", PREDICTIONS)
def test_forward_process_and_targets_match_diffusers(pred):
    x0, noise = _data()
    sched = make_schedule("scaled_linear", pred)
    ref = DDPMScheduler(**diffusers_kwargs(sched))
    t = torch.tensor([0, 250, 731, 999])
    torch.testing.assert_close(q_sample(x0, t, noise, sched), ref.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)
    target = {"eps": noise, "v": ref.get_velocity(x0, noise, t), "x0": x0}[pred]
    torch.testing.assert_close(training_target(x0, noise, t, sched), target, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("zero_snr", [False, True])
def test_prediction_conversions_round_trip(zero_snr):
    x0, noise = _data(seed=1)
    x0, noise = x0.double(), noise.double()
    t = torch.tensor([0, 10, 500, 998]) if zero_snr else torch.tensor([0, 10, 500, 999])
    preds = ("v", "x0") if zero_snr else PREDICTIONS
    for source in preds:
        sched = make_schedule("cosine", source, zero_snr)
        x_t = q_sample(x0, t, noise, sched)
        pred = training_target(x0, noise, t, sched)
        for to in PREDICTIONS:  # the exact target of every type
            want = {"eps": noise, "x0": x0, "v": training_target(x0, noise, t, make_schedule("cosine", "v", zero_snr))}[to]
            got = convert_prediction(pred, x_t, t, sched, to)
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-6 if to == "x0" else 1e-9)
            back = convert_prediction(got, x_t, t, sched, source, source=to)
            torch.testing.assert_close(back, pred, rtol=1e-7, atol=1e-6)


@pytest.mark.parametrize("pred", PREDICTIONS)
def test_min_snr_weights_match_the_reference_formula(pred):
    """Min-SNR-gamma as in diffusers' train_text_to_image.py (Hang et al. 2023)."""
    sched = make_schedule("linear", pred)
    ref = DDPMScheduler(**diffusers_kwargs(sched))
    t = torch.arange(0, 1000, 37)
    snr = compute_snr(ref, t)
    w = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    w = {"eps": w / snr, "v": w / (snr + 1), "x0": w}[pred]
    torch.testing.assert_close(loss_weights(t, sched, "min_snr", gamma=5.0), w, rtol=1e-4, atol=1e-6)
    assert torch.equal(loss_weights(t, sched), torch.ones(len(t)))
    zero = make_schedule("linear", "v", True)  # SNR 0 at the last step: weight 0, not NaN
    assert loss_weights(torch.tensor([999]), zero, "min_snr").item() == 0
    with pytest.raises(SamplerError, match="'uniform', 'min_snr'"):
        loss_weights(t, sched, "p2")


def test_training_helpers_reject_bad_timesteps():
    x0, noise = _data()
    sched = make_schedule("linear", "eps")
    with pytest.raises(SamplerError, match=r"\[0, 999\]"):
        q_sample(x0, torch.tensor([0, 1, 2, 1000]), noise, sched)
    with pytest.raises(SamplerError, match="integer"):
        q_sample(x0, torch.zeros(4), noise, sched)
    with pytest.raises(SamplerError, match="noise"):
        training_target(x0, noise[:2], torch.zeros(4, dtype=torch.long), sched)


@pytest.mark.parametrize("kind,pred", [("linear", "eps"), ("cosine", "v")])
def test_ddim_eta0_is_deterministic_and_invertible(kind, pred):
    """Encode data with diffusers' DDIMInverseScheduler, decode with our DDIM: the error
    is the inversion's first-order mismatch, so it shrinks as steps grow."""
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 4, 1)
    sched = make_schedule(kind, pred)
    f = toy_denoiser(sched, mu, s=0.5, wobble=0.1)
    x0 = mu + 0.5 * torch.randn(8, 4, 16, generator=torch.Generator().manual_seed(0))
    errors = []
    for steps in (50, 200):
        inv = DDIMInverseScheduler(**diffusers_kwargs(sched), clip_sample=False)
        inv.set_timesteps(steps)
        x = x0
        for t in inv.timesteps:
            x = inv.step(f(x, t.expand(8)), t, x).prev_sample
        out = sample(f, x, sched, method="ddim", steps=steps)
        assert torch.equal(out, sample(f, x, sched, method="ddim", steps=steps))
        errors.append((out - x0).abs().max().item())
    assert errors[1] < 0.1 and errors[1] < errors[0] / 2, errors


# Sampling N(mu, s^2) with its exact denoiser: tolerance per method at 20 steps, measured
# errors for these cases are DDIM <= 14 %, Heun <= 8 %, DPM++ <= 5 % (std); DDPM at 250.
GAUSSIAN_CASES = [
    ("ddim", {}, 20, 0.16),
    ("dpm++2m", {}, 20, 0.06),
    ("heun", {}, 20, 0.10),
    ("ddim", {}, 100, 0.04),
    ("ddpm", {}, 250, 0.06),
    ("ddim", {"eta": 1.0}, 250, 0.06),
    ("diffusers:UniPCMultistepScheduler", {}, 20, 0.06),
]


@pytest.mark.parametrize("kind,pred,zero_snr", [("linear", "eps", False), ("cosine", "v", False), ("linear", "x0", True)])
@pytest.mark.parametrize("method,options,steps,std_tol", GAUSSIAN_CASES)
def test_recovers_a_gaussian_with_the_exact_denoiser(kind, pred, zero_snr, method, options, steps, std_tol):
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 4, 1)
    s = 0.5
    sched = make_schedule(kind, pred, zero_snr)
    x_T = torch.randn(512, 4, 16, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    x = sample(toy_denoiser(sched, mu, s, wobble=0.0), x_T, sched, method=method, steps=steps,
               spacing="trailing", generator=gen, **options)  # fmt: skip
    mean, std = x.mean(dim=(0, 2)), x.std(dim=(0, 2))
    assert (mean - mu.flatten()).abs().max() < 0.02, mean
    assert (std / s - 1).abs().max() < std_tol, std
