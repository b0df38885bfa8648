"""`sample`'s contract: bad input, callbacks and early stop, randomness, dtypes, threads, CFG."""

from __future__ import annotations

import threading

import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from test_samplers_reference import make_schedule, toy_denoiser

from samplers import CFG, METHODS, DynamicThreshold, NoiseSchedule, SamplerError, sample

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")
SCHED = NoiseSchedule.create("linear")
MU = torch.linspace(-1, 1, 3 * 4 * 4).reshape(3, 4, 4)


def denoise(x, t):
    return 0.5 * x + 0.01 * t.view(-1, *([1] * (x.dim() - 1)))


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": 0}, r"steps must be an integer between 1 and 1000 \(the schedule has 1000 training timesteps\), got 0"),
        ({"steps": 1001}, "between 1 and 1000"),
        ({"eta": -0.1}, "eta must be a number between 0 and 1"),
        ({"eta": 1.5}, "eta must be a number between 0 and 1"),
        ({"method": "dpm++2m", "eta": 0.5}, "eta only applies to method 'ddim'"),
        ({"method": "ddim", "variance": "fixed_large"}, "variance only applies to method 'ddpm'"),
        ({"method": "ddpm", "variance": "learned"}, "'fixed_small', 'fixed_large'"),
        ({"method": "plms"}, "'ddpm', 'ddim', 'dpm\\+\\+2m', 'heun', 'diffusers:<SchedulerClass>'"),
        ({"spacing": "uniform"}, "'leading', 'trailing', 'linspace'"),
        ({"timesteps": [10, 500]}, "strictly descending"),
        ({"timesteps": [1000, 500]}, r"\[0, 999\]"),
        ({"timesteps": []}, "must not be empty"),
        ({"timesteps": [900, 10], "steps": 2}, "either timesteps"),
        ({"clip_x0": -1.0}, "clip_x0 must be None"),
        ({"guidance": CFG(3.0, {})}, "guidance needs the conditional input"),
        ({"method": "ddpm", "noise": [torch.zeros(2, 3, 4, 4)]}, "noise has 1 entries"),
        ({"method": "ddpm", "noise": [torch.zeros(1, 3)] * 50}, r"noise for step 0 must be a tensor of shape \(2, 3, 4, 4\)"),
        ({"callback": 3}, "callback must be callable"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(SamplerError, match=match):
        sample(denoise, torch.randn(2, 3, 4, 4), SCHED, **kwargs)


def test_wrong_shaped_prediction_is_a_clear_error():
    with pytest.raises(SamplerError, match=r"denoise returned shape \(2, 6, 4, 4\) for an input x_t of shape \(2, 3, 4, 4\)"):
        sample(lambda x, t: torch.cat([x, x], 1), torch.randn(2, 3, 4, 4), SCHED)
    with pytest.raises(SamplerError, match="x_T must be a floating-point tensor"):
        sample(denoise, torch.zeros(2, 3, dtype=torch.long), SCHED)
    with pytest.raises(SamplerError, match="NoiseSchedule"):
        sample(denoise, torch.randn(2, 3), {"beta_schedule": "linear"})


# -- callback and early stop ----------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_callback_sees_every_step_and_can_stop(method):
    seen, calls = [], []
    x_T = torch.randn(2, 3, 4, 4)

    def counting(x, t):
        calls.append(int(t[0]))
        return denoise(x, t)

    out = sample(counting, x_T, SCHED, method=method, steps=5, callback=lambda *a: seen.append(a))
    assert [a[0] for a in seen] == list(range(5)) and [a[1] for a in seen] == [800, 600, 400, 200, 0]
    assert all(a[2].shape == a[3].shape == x_T.shape for a in seen)
    assert torch.equal(out, seen[-1][2])
    calls.clear()
    states = []

    def stop_after_step_1(i, t, x, x0):
        states.append(x)
        return i < 1  # False at step 1: stop

    stopped = sample(counting, x_T, SCHED, method=method, steps=5, callback=stop_after_step_1)
    assert calls == ([800, 600, 600, 400] if method == "heun" else [800, 600])
    assert len(states) == 2 and torch.equal(stopped, states[1])


# -- randomness, dtypes, threads, ranks ----------------------------------------------------------


def test_generator_makes_stochastic_sampling_reproducible():
    x_T = torch.randn(2, 3, 4, 4)

    def run(seed, **kw):
        return sample(denoise, x_T, SCHED, method="ddpm", steps=10, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))
    per_sample = sample(denoise, x_T, SCHED, method="ddim", eta=1.0, steps=10,
                        generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])  # fmt: skip
    alone = sample(denoise, x_T[1:], SCHED, method="ddim", eta=1.0, steps=10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(per_sample[1:], alone)


def test_threads_share_a_sampler_safely():
    sched = make_schedule("cosine", "v")
    f = toy_denoiser(sched, MU)
    x_T = torch.randn(2, 3, 4, 4)
    want = sample(f, x_T, sched, method="dpm++2m", steps=8)
    results = [None] * 4

    def work(k):
        method = ("dpm++2m", "ddim")[k % 2]
        results[k] = sample(f, x_T, sched, method=method, steps=8, eta=0.0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    assert torch.equal(results[0], want) and torch.equal(results[2], want)
    assert torch.equal(results[1], results[3])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(dtype):
    seen = []

    def f(x, t):
        seen.append(x.dtype)
        return (0.5 * x).to(dtype)

    x_T = torch.randn(2, 3, 4, 4, dtype=dtype)
    out = sample(f, x_T, SCHED, method="dpm++2m", steps=4)
    assert out.dtype == dtype and set(seen) == {dtype}
    ref = sample(lambda x, t: 0.5 * x, x_T.double(), SCHED, method="dpm++2m", steps=4)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("shape", [(2, 8), (2, 4, 8, 8), (1, 3, 5, 4, 4)])
def test_any_rank(shape):
    out = sample(denoise, torch.randn(shape), SCHED, method="ddim", steps=3, clip_x0=DynamicThreshold())
    assert out.shape == shape and out.abs().max() <= 1


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", [*METHODS, "diffusers:UniPCMultistepScheduler"])
def test_devices_agree_with_cpu(device, method):
    sched = make_schedule("cosine", "v")
    x_T = torch.randn(2, 3, 4, 4)
    noise = [torch.randn(2, 3, 4, 4) for _ in range(8)]
    want = sample(toy_denoiser(sched, MU), x_T, sched, method=method, steps=8, noise=noise)
    f = toy_denoiser(sched, MU.to(device))
    got = sample(f, x_T.to(device), sched, method=method, steps=8, noise=[n.to(device) for n in noise])
    assert got.device.type == device
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
    for gen in (torch.Generator(device).manual_seed(0), torch.Generator().manual_seed(0)):  # on the device or the CPU
        out = sample(f, x_T.to(device), sched, method="ddpm", steps=4, generator=gen)
        assert out.device.type == device and torch.isfinite(out).all()


# -- classifier-free guidance -------------------------------------------------------------------


def cond_model(calls):
    """x0-predicting model whose output depends on cond['text'] and cond['low_res']."""

    def f(x, t, cond):
        calls.append((x.shape[0], t.shape[0], {k: v.shape[0] for k, v in cond.items()}))
        text = cond["text"].mean(dim=1).view(-1, 1, 1, 1)
        return 0.3 * x + text + 0.1 * cond["low_res"]

    return f


def test_cfg_batches_cond_and_null_in_one_forward_and_combines():
    sched = NoiseSchedule.create("linear", prediction="x0")
    x_T = torch.randn(2, 3, 4, 4)
    cond = {"text": torch.tensor([[1.0, 3.0], [2.0, 2.0]]), "low_res": torch.randn(2, 3, 4, 4)}
    negative = {"text": torch.tensor([[-1.0, 0.0]])}  # batch 1: broadcast; low_res is taken from cond
    calls = []
    f = cond_model(calls)
    w = 4.0
    out = sample(f, x_T, sched, timesteps=[999], cond=cond, guidance=CFG(w, negative))
    assert calls == [(4, 4, {"text": 4, "low_res": 4})]  # one batched forward: [cond; null]
    t = torch.full((2,), 999)
    c = f(x_T, t, cond)
    u = f(x_T, t, {"text": negative["text"].expand(2, 2), "low_res": cond["low_res"]})
    torch.testing.assert_close(out, u + w * (c - u))  # one step to x_0 returns the guided x_0


def test_cfg_rescale_matches_diffusers_and_scale_one_skips_the_null_pass():
    sched = NoiseSchedule.create("linear", prediction="v")
    x_T = torch.randn(2, 3, 4, 4)
    cond = {"text": torch.randn(2, 2), "low_res": torch.randn(2, 3, 4, 4)}
    null = {"text": torch.zeros(2, 2), "low_res": torch.zeros(2, 3, 4, 4)}
    calls = []
    f = cond_model(calls)
    t = torch.full((2,), 999)
    c, u = f(x_T, t, cond), f(x_T, t, null)
    want_v = rescale_noise_cfg(u + 7.5 * (c - u), c, guidance_rescale=0.7)
    out = sample(f, x_T, sched, timesteps=[999], cond=cond, guidance=CFG(7.5, null, rescale=0.7))
    a, s = sched.alpha_bars[999] ** 0.5, (1 - sched.alpha_bars[999]) ** 0.5
    torch.testing.assert_close(out, a * x_T - s * want_v)  # x_0 from the guided v
    calls.clear()
    plain = sample(f, x_T, sched, steps=3, cond=cond, guidance=CFG(1.0, null))
    assert [k[0] for k in calls] == [2, 2, 2]
    calls.clear()
    assert torch.equal(plain, sample(f, x_T, sched, steps=3, cond=cond))  # no guidance: denoise(x, t, cond)
    assert [k[0] for k in calls] == [2, 2, 2]


def test_inner_guidance_is_instructpix2pix_in_one_forward_within_its_interval():
    # InstructPix2Pix (Brooks et al. 2023, eq. 3) with low_res as the inner (image) condition:
    # e(none) + s_in (e(text off) - e(none)) + s (e(cond) - e(text off)), at t >= inner_from only
    sched = NoiseSchedule.create("linear", prediction="x0")
    x_T = torch.randn(2, 3, 4, 4)
    cond = {"text": torch.tensor([[1.0, 3.0], [2.0, 2.0]]), "low_res": torch.randn(2, 3, 4, 4)}
    null, off = {"text": torch.zeros(1, 2)}, {"low_res": torch.zeros(1, 3, 4, 4)}
    calls = []
    f = cond_model(calls)
    s, s_in = 4.0, 2.5
    out = sample(f, x_T, sched, timesteps=[999], cond=cond, guidance=CFG(s, null, inner_scale=s_in, inner_null=off))
    assert calls == [(6, 6, {"text": 6, "low_res": 6})]  # one forward: [cond; text off; both off]
    t = torch.full((2,), 999)
    c = f(x_T, t, cond)
    u = f(x_T, t, {"text": torch.zeros(2, 2), "low_res": cond["low_res"]})
    n = f(x_T, t, {"text": torch.zeros(2, 2), "low_res": torch.zeros(2, 3, 4, 4)})
    torch.testing.assert_close(out, n + s_in * (u - n) + s * (c - u))
    # below inner_from a step is plain CFG on two halves; inner_scale 1 is plain CFG everywhere
    for guidance in (CFG(s, null, inner_scale=s_in, inner_null=off, inner_from=500), CFG(s, null)):
        calls.clear()
        got = sample(f, x_T, sched, timesteps=[400], cond=cond, guidance=guidance)
        assert [k[0] for k in calls] == [4]
        torch.testing.assert_close(got, sample(f, x_T, sched, timesteps=[400], cond=cond, guidance=CFG(s, null)))
    # with no text guidance (scale 1) the inner term alone still runs
    calls.clear()
    sample(f, x_T, sched, timesteps=[999], cond=cond, guidance=CFG(1.0, null, inner_scale=s_in, inner_null=off))
    assert [k[0] for k in calls] == [6]
    with pytest.raises(SamplerError, match="inner_scale 2 needs inner_null"):
        CFG(3.0, null, inner_scale=2.0)
    with pytest.raises(SamplerError, match="inner_null must be a dict of tensors, got list"):
        CFG(3.0, null, inner_scale=2.0, inner_null=[])


def test_cfg_errors_name_the_key():
    x_T = torch.randn(2, 3, 4, 4)
    cond = {"text": torch.randn(2, 5, 8)}
    with pytest.raises(SamplerError, match=r"cond\['text'\] has shape \(5, 8\) per sample but null_cond\['text'\] has \(7, 8\)"):
        sample(cond_model([]), x_T, SCHED, cond=cond, guidance=CFG(3.0, {"text": torch.randn(1, 7, 8)}))
    with pytest.raises(SamplerError, match="null_cond has keys \\['label'\\] that cond lacks"):
        sample(cond_model([]), x_T, SCHED, cond=cond, guidance=CFG(3.0, {"label": torch.zeros(1)}))
    with pytest.raises(SamplerError, match="rescale must be between 0 and 1"):
        CFG(3.0, {}, rescale=2.0)
