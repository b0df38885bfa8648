"""NoiseSchedule, timestep spacing and the alpha_bar / sigma / log-SNR conversions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from test_samplers_reference import diffusers_kwargs, make_schedule

from samplers import (
    NoiseSchedule,
    SamplerError,
    alpha_bar_from_log_snr,
    alpha_bar_from_sigma,
    log_snr_from_alpha_bar,
    make_timesteps,
    sigma_from_alpha_bar,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")
KINDS = ("linear", "scaled_linear", "cosine")


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_tables_match_diffusers(kind, zero_snr):
    """Same betas and alphas_cumprod as diffusers, up to its float32 rounding (its
    zero-SNR betas are 1 - alpha in float32, so only good to ~1e-7 absolute)."""
    sched = make_schedule(kind, "v", zero_snr)
    ref = DDIMScheduler(**diffusers_kwargs(sched))
    assert sched.betas.dtype == sched.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(sched.betas, ref.betas.double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sched.alphas_cumprod, ref.alphas_cumprod.double(), rtol=1e-4, atol=1e-7)
    if zero_snr:
        assert sched.alphas_cumprod[-1] == 0
        plain = make_schedule(kind, "v", False)
        assert math.isclose(sched.alpha_bars[0], plain.alpha_bars[0], rel_tol=1e-12)


def test_conversions_match_diffusers_and_round_trip():
    sched = make_schedule("scaled_linear", "eps")
    dpm = DPMSolverMultistepScheduler(**diffusers_kwargs(sched))
    torch.testing.assert_close(sched.sigmas, dpm.sigmas.double(), rtol=1e-4, atol=0)
    torch.testing.assert_close(sched.log_snrs, 2 * dpm.lambda_t.double(), rtol=1e-4, atol=1e-5)
    ab = sched.alphas_cumprod
    torch.testing.assert_close(alpha_bar_from_sigma(sched.sigmas), ab, rtol=1e-12, atol=0)
    torch.testing.assert_close(alpha_bar_from_log_snr(sched.log_snrs), ab, rtol=1e-12, atol=0)
    for a in (1e-6, 0.3, 0.999):  # the float versions agree with the tensor ones
        assert math.isclose(alpha_bar_from_sigma(sigma_from_alpha_bar(a)), a, rel_tol=1e-12)
        assert math.isclose(alpha_bar_from_log_snr(log_snr_from_alpha_bar(a)), a, rel_tol=1e-12)
    assert sigma_from_alpha_bar(0.0) == math.inf and log_snr_from_alpha_bar(0.0) == -math.inf
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(sched.snr(t), (ab / (1 - ab))[t])


def test_config_round_trips_through_json():
    sched = NoiseSchedule.create("cosine", num_train_timesteps=500, prediction="v", zero_terminal_snr=True)
    again = NoiseSchedule.from_dict(json.loads(json.dumps(sched.to_dict())))
    assert again == sched and hash(again) == hash(sched)
    assert torch.equal(again.alphas_cumprod, sched.alphas_cumprod)
    with pytest.raises(SamplerError, match="beta_schedule"):
        NoiseSchedule.from_dict({**sched.to_dict(), "bogus": 1})
    with pytest.raises(AttributeError):
        sched.prediction = "eps"  # frozen


def test_diffusers_names_and_configs_are_read():
    ref = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", rescale_betas_zero_snr=True)
    sched = NoiseSchedule.from_diffusers_config(dict(ref.config))
    assert (sched.beta_schedule, sched.prediction, sched.zero_terminal_snr) == ("cosine", "v", True)
    assert NoiseSchedule.create("linear", prediction="epsilon").prediction == "eps"
    assert NoiseSchedule.create("linear", prediction="sample").prediction == "x0"


def test_cosine_ignores_beta_range():
    a = NoiseSchedule.create("cosine", beta_start=0.5, beta_end=0.1)
    assert torch.equal(a.betas, NoiseSchedule.create("cosine").betas)
    assert a.betas.max() <= 0.999


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta_schedule": "sigmoid"}, "'linear', 'scaled_linear', 'cosine'"),
        ({"prediction": "noise"}, "'eps', 'v', 'x0'"),
        ({"num_train_timesteps": 1}, "num_train_timesteps"),
        ({"beta_start": 0.02, "beta_end": 1e-4}, "beta_start"),
        ({"prediction": "eps", "zero_terminal_snr": True}, "prediction 'v' or 'x0'"),
    ],
)
def test_bad_schedules_are_clear_errors(kwargs, match):
    with pytest.raises(SamplerError, match=match):
        NoiseSchedule.create(**kwargs)
    assert issubclass(SamplerError, ValueError)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_diffusers(spacing):
    """Same grids as DDIMScheduler.set_timesteps where its float arithmetic is exact.

    For step counts that are multiples of 16, "trailing" hits exact .5 ties, which numpy's
    float arange rounds either way; ours rounds ties to even exactly. Those counts (and
    the 62 counts where diffusers' trailing grid is one too long, see
    test_samplers_diffusers) are left out.
    """
    for steps in (1, 2, 3, 7, 10, 20, 25, 50, 100, 333, 999, 1000):
        ref = DDIMScheduler(timestep_spacing=spacing)
        ref.set_timesteps(steps)
        assert make_timesteps(1000, steps, spacing) == ref.timesteps.tolist(), steps


def test_every_step_count_gives_a_valid_grid():
    for spacing in ("leading", "trailing", "linspace"):
        for steps in range(1, 1001):
            ts = make_timesteps(1000, steps, spacing)
            assert len(ts) == steps and 0 <= ts[-1] and ts[0] <= 999
            assert all(a > b for a, b in zip(ts, ts[1:]))
    assert make_timesteps(1000, 10, "linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert make_timesteps(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert make_timesteps(1000, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]


@pytest.mark.parametrize("steps", [0, 1001, -3, 2.5, True])
def test_bad_step_counts(steps):
    with pytest.raises(SamplerError, match="steps must be an integer between 1 and 1000"):
        make_timesteps(1000, steps, "leading")


def test_unknown_spacing_lists_the_known_ones():
    with pytest.raises(SamplerError, match="'leading', 'trailing', 'linspace'"):
        make_timesteps(1000, 10, "uniform")


@pytest.mark.parametrize("spacing", ["karras", "exponential"])
@pytest.mark.parametrize("kind", ["scaled_linear", "linear"])
def test_sigma_spacings_match_diffusers_sigma_options(spacing, kind):
    """The noise levels of Karras et al. (rho 7) or log-uniform, between the schedule's first
    and last, each at its nearest timestep: diffusers' use_karras_sigmas / use_exponential_sigmas
    interpolate t in log sigma and round, so the grids agree to one timestep. (On the cosine
    schedule, whose first sigma is 2e4, diffusers' Karras grid repeats timesteps; ours moves
    repeats down, see the next test.)"""
    sched = make_schedule(kind, "eps")
    for steps in (4, 10, 25):
        ref = DPMSolverMultistepScheduler(**{**diffusers_kwargs(sched), f"use_{spacing}_sigmas": True})
        ref.set_timesteps(steps)
        ours = make_timesteps(1000, steps, spacing, sched)
        theirs = ref.timesteps.tolist()
        assert len(ours) == len(theirs) == steps and ours[0] == 999
        assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1, (steps, ours, theirs)


def test_sigma_spacings_give_valid_grids_for_every_step_count():
    for sched in (make_schedule("cosine", "v"), make_schedule("linear", "v", zero_snr=True)):
        for spacing in ("karras", "exponential"):
            for steps in (*range(1, 60), 200, 999, 1000):
                ts = make_timesteps(1000, steps, spacing, sched)
                assert len(ts) == steps and ts[0] == 999 and ts[-1] >= 0
                assert all(a > b for a, b in zip(ts, ts[1:]))
    karras = make_timesteps(1000, 10, "karras", make_schedule("cosine", "v"))
    assert karras[-1] < 20 < karras[-3]  # Karras crowds its steps at low noise
    with pytest.raises(SamplerError, match="spacing 'karras' spaces the schedule's noise levels: pass sched="):
        make_timesteps(1000, 10, "karras")
