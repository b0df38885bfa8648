"""The masked-frame video model (issue 17): known frames and a mask as inputs, trained
with random masks so one model animates, interpolates, extends and generates; the
pipeline passes known frames as input and as the samplers' `known`."""

from __future__ import annotations

import pytest
import torch

import models
from models.conditioning import fill_frames
from gen.cli import main
from gen.errors import GenError
from gen.pipeline import FRAME_MASKS, SamplingDefaults, VideoPipeline, frame_mask, random_frame_masks
from gen.train import TrainConfig
from gen.train.diffusion import DiffusionTask
from samplers import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")
KEYS = ("frames", "frame_mask")


def _text_encoder():
    return models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                       embed_dim=32, context_length=16))


def _jiggle(net):
    """As if trained: zero-initialised branches and gates would hide a difference."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_frame_mask_kinds():
    assert frame_mask("animate", 5).tolist() == [1, 0, 0, 0, 0]
    assert frame_mask("interpolate", 6).tolist() == [1, 0, 1, 0, 1, 0]
    assert frame_mask("extend", 6).tolist() == [1, 1, 1, 0, 0, 0]
    assert frame_mask("extend", 6, known=2).tolist() == [1, 1, 0, 0, 0, 0]
    assert frame_mask("none", 3).tolist() == [0, 0, 0]
    with pytest.raises(GenError, match="one of animate, interpolate, extend, none"):
        frame_mask("jump", 4)
    with pytest.raises(GenError, match="between 1 and 3"):
        frame_mask("extend", 4, known=4)


def test_random_masks_are_drawn_from_the_kinds_and_the_generator():
    g = torch.Generator().manual_seed(0)
    masks = random_frame_masks(FRAME_MASKS, 400, 8, g)
    again = random_frame_masks(FRAME_MASKS, 400, 8, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again) and masks.shape == (400, 8)
    animate, interp, none = frame_mask("animate", 8), frame_mask("interpolate", 8), frame_mask("none", 8)
    kinds = {"animate": 0, "interpolate": 0, "extend": 0, "none": 0}
    for row in masks:
        if torch.equal(row, animate):
            kinds["animate"] += 1
        elif torch.equal(row, interp):
            kinds["interpolate"] += 1
        elif torch.equal(row, none):
            kinds["none"] += 1
        else:  # extend: a prefix of ones, then zeros, at least one of each
            k = int(row.sum())
            assert 1 <= k < 8 and torch.equal(row, frame_mask("extend", 8, known=k))
            kinds["extend"] += 1
    assert all(60 < count < 140 for count in kinds.values()), kinds  # uniform over 4 kinds: 100 each
    assert torch.equal(random_frame_masks(("animate",), 3, 4, g), animate[:4].repeat(3, 1))


def _fill_by_loop(frames, mask):
    """The known-frame guess written frame by frame: the distance-weighted blend of the
    nearest known frames on each side, the nearest one where only one side has any."""
    out = torch.zeros_like(frames)
    for b in range(frames.shape[0]):
        known = [s for s in range(frames.shape[2]) if mask[b, s] > 0.5]
        for t in range(frames.shape[2]):
            before, after = [s for s in known if s <= t], [s for s in known if s >= t]
            if before and after:
                p, n = before[-1], after[0]
                w = 0.0 if n == p else (t - p) / (n - p)
                out[b, :, t] = (1 - w) * frames[b, :, p] + w * frames[b, :, n]
            elif before or after:
                out[b, :, t] = frames[b, :, (before or after)[-1 if before else 0]]
    return out


def test_unknown_frames_are_guessed_from_the_known_ones():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn((5, 2, 7, 3, 3), generator=g)
    mask = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0, 1], [0, 0, 1, 0, 0, 0, 1],
                         [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    filled = fill_frames(frames, mask)
    torch.testing.assert_close(filled, _fill_by_loop(frames, mask))
    assert torch.equal(filled[0], frames[0, :, :1].expand(2, 7, 3, 3))  # animate: the still everywhere
    torch.testing.assert_close(filled[1, :, 1], (frames[1, :, 0] + frames[1, :, 2]) / 2)  # the blend
    assert not filled[4].any()  # nothing known: nothing to guess from
    known = mask.bool()[:, None, :, None, None].expand_as(frames)
    assert torch.equal(filled[known], frames[known])  # known frames pass through
    torch.testing.assert_close(fill_frames(frames * mask[:, None, :, None, None], mask), filled)  # unknown ignored


def _cond(net, b=2, frames=4, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, 3, frames, size, size), generator=g)
    cond = {"text": torch.randn((b, 16, net.config.text_dim), generator=g),
            "pooled": torch.randn((b, net.config.pooled_dim), generator=g),
            "text_mask": torch.ones(b, 16, dtype=torch.bool)}
    return x, torch.tensor([10, 700][:b]), cond


@pytest.mark.parametrize("how", ["video_from_image", "extend-dit", "extend-unet"])
def test_widened_inputs_start_as_the_model_without_them(how):
    torch.manual_seed(0)

    if how == "video_from_image":
        image = _jiggle(models.create("dit-tiny", sample_size=8, text_dim=32, pooled_dim=32))
        plain = models.video_from_image(image, frames=4)
        masked = models.video_from_image(image, frames=4, concat_keys=KEYS)
    else:
        preset = "video-dit-tiny" if how == "extend-dit" else "video-unet-tiny"
        plain = _jiggle(models.create(preset, sample_size=8, frames=4, text_dim=32, pooled_dim=32,
                                      **({"tubelet": 1} if how == "extend-dit" else {})))
        masked = models.extend(plain, concat_keys=KEYS)
    assert masked.config.concat_keys == KEYS
    x, t, cond = _cond(plain)
    expected = plain(x, t, cond)
    for frames, mask in ((torch.randn_like(x), torch.tensor([[1.0, 0, 1, 0], [1, 1, 0, 0]])),
                         (torch.zeros_like(x), torch.zeros(2, 4))):
        out = masked(x, t, {**cond, "frames": frames, "frame_mask": mask})
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="frames"):
        masked(x, t, cond)  # the new inputs are required


def _training_inputs(task, x0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return task.known_frames(x0, task.frame_masks(x0, g), g)


def test_training_inputs_hide_unknown_frames_and_weight_only_them():
    cfg = TrainConfig(out="unused", kind="video", frames=4, frame_masks=("interpolate",)).validate()
    task = DiffusionTask(cfg, torch.device("cpu"))
    x0 = torch.randn(3, 3, 4, 8, 8)
    extra, where = _training_inputs(task, x0)
    assert torch.equal(extra["frame_mask"], torch.tensor([[1.0, 0, 1, 0]]).repeat(3, 1))
    assert torch.equal(extra["frames"][:, :, 0::2], x0[:, :, 0::2]) and not extra["frames"][:, :, 1::2].any()
    assert torch.equal(where[:, 0, :, 0, 0], torch.tensor([[0.0, 1, 0, 1]]).repeat(3, 1))
    noisy_cfg = TrainConfig(out="unused", kind="video", frames=4, frame_masks=("animate",), known_noise=0.5)
    noisy = DiffusionTask(noisy_cfg.validate(), torch.device("cpu"))
    extra, _ = _training_inputs(noisy, x0)
    delta = extra["frames"][:, :, 0] - x0[:, :, 0]
    assert 0 < delta.abs().max() and not extra["frames"][:, :, 1:].any()
    one = _training_inputs(noisy, x0[:, :, :1])[0]  # an image: nothing known
    assert not one["frame_mask"].any()


def test_dense_interpolation_trains_temporal_sr_at_the_doubled_rate():
    cfg = TrainConfig(out="unused", kind="video", data="toy-video", data_n=4, size=8, frames=4, fps=2.0,
                      model="video-dit-tiny",
                      model_overrides={"tubelet": 1}, frame_masks=("animate", "interpolate"),
                      dense_interpolate=True).validate()
    task = DiffusionTask(cfg, torch.device("cpu"))
    dataset, _ = task.build()
    assert dataset[0]["video"].shape[1] == 8  # twice the frames at twice the rate: the same two seconds
    x0 = torch.arange(8.0).view(1, 1, 8, 1, 1).repeat(64, 1, 1, 1, 1)  # each frame holds its index
    g = torch.Generator().manual_seed(0)
    mask = task.frame_masks(x0, g)
    picked = task.clip_rates(x0, mask, g)[:, 0, :, 0, 0]
    dense = mask[:, 2] == 1  # interpolate: 1, 0, 1, 0; animate: 1, 0, 0, 0
    assert 0 < dense.sum() < 64 and picked.shape == (64, 4)
    assert torch.equal(picked[~dense], torch.tensor([0.0, 2, 4, 6]).expand(int((~dense).sum()), 4))  # at --fps
    steps = picked[dense].diff(dim=1)
    assert torch.equal(steps, torch.ones_like(steps)) and len(set(picked[dense, 0].tolist())) > 1  # 2x fps, anywhere
    for bad in ({"frame_masks": ("animate",)}, {"vae": "toy-vae"}):
        with pytest.raises(GenError, match="--dense-interpolate"):
            TrainConfig(out="unused", kind="video", frames=4, dense_interpolate=True,
                        **{"frame_masks": ("interpolate",), **bad}).validate()


@pytest.fixture(scope="module")
def masked_pipe():
    torch.manual_seed(0)
    enc = _text_encoder()
    net = models.create("video-dit-tiny", sample_size=8, frames=4, tubelet=1, text_dim=enc.dim,
                        pooled_dim=enc.pooled_dim, concat_keys=KEYS)
    _jiggle(net)
    return VideoPipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"),
                         SamplingDefaults(size=8, steps=3, frames=4, fps=2.0))


def _spy(pipe):
    seen = []
    forward = pipe.denoiser.forward

    def spy(x, t, cond):
        seen.append({k: cond[k].clone() for k in KEYS})
        return forward(x, t, cond)

    pipe.denoiser.forward = spy
    return seen


def test_known_frames_are_input_in_both_guidance_halves_and_kept(masked_pipe):
    seen = _spy(masked_pipe)
    try:
        g = torch.Generator().manual_seed(3)
        clips = torch.rand((1, 3, 4, 8, 8), generator=g) * 2 - 1
        mask = frame_mask("interpolate", 4)
        out = masked_pipe.generate(["a cat", "a dog"], [0, 1], known_frames=(clips, mask), cfg=3.0)
        torch.testing.assert_close(out[:, :, 0::2], clips[:, :, 0::2].expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
        assert len(seen) == 3  # one batched call a step: [cond; null]
        for step in seen:
            assert torch.equal(step["frame_mask"], mask.repeat(4, 1))
            assert torch.allclose(step["frames"][:, :, 0::2], clips[:, :, 0::2].expand(4, -1, -1, -1, -1))
            assert not step["frames"][:, :, 1::2].any()
        seen.clear()
        masked_pipe.generate(["a cat"], [0])  # nothing known: text to video, an all-zero mask
        assert all(not s["frame_mask"].any() and not s["frames"].any() for s in seen)
    finally:
        del masked_pipe.denoiser.forward


def test_frame_guidance_adds_a_pass_without_the_frames_at_the_noisier_steps(masked_pipe):
    seen = _spy(masked_pipe)
    try:
        frame0 = torch.rand((3, 8, 8), generator=torch.Generator().manual_seed(5)) * 2 - 1
        plain = masked_pipe.generate(["a cat"], [0], init_image=frame0, cfg=3.0, steps=4)
        calls = len(seen)
        guided = masked_pipe.generate(["a cat"], [0], init_image=frame0, cfg=3.0, steps=4, frame_cfg=3.0)
        rows = [step["frame_mask"] for step in seen[calls:]]
        # trailing spacing over 1000 timesteps: 999, 749 at t >= 500 get [cond; null; neither]
        assert [r.shape[0] for r in rows] == [3, 3, 2, 2]
        assert rows[0][:2, 0].all() and not rows[0][2].any()  # the third row has no frame known
        assert not torch.equal(plain, guided)
        torch.testing.assert_close(guided[:, :, 0], frame0[None], atol=1e-5, rtol=0)  # frame 0 still held
        seen.clear()
        masked_pipe.generate(["a cat"], [0], steps=2, frame_cfg=3.0)  # nothing known: nothing to guide on
        assert [s["frame_mask"].shape[0] for s in seen] == [2, 2]
    finally:
        del masked_pipe.denoiser.forward
    with pytest.raises(GenError, match="--frame-cfg must be between 0 and 50"):
        masked_pipe.generate(["a cat"], [0], frame_cfg=-1.0)


def test_interpolate_doubles_the_frames_keeping_the_given_ones(masked_pipe):
    clips = torch.rand((1, 3, 2, 8, 8), generator=torch.Generator().manual_seed(4)) * 2 - 1
    out = masked_pipe.interpolate(["a cat"], clips, [0])
    assert out.shape == (1, 3, 4, 8, 8)
    torch.testing.assert_close(out[:, :, 0::2], clips, atol=1e-5, rtol=0)


def test_motion_inbetweens_are_motion_compensated_and_the_model_draws_the_last(masked_pipe):
    from gen.pipeline.motion import bilateral_midframes

    clips = torch.rand((2, 3, 4, 8, 8), generator=torch.Generator().manual_seed(6)) * 2 - 1
    calls = []
    generate = masked_pipe.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return generate(*args, **kwargs)

    masked_pipe.generate = spy
    try:
        out = masked_pipe.interpolate(["a cat", "a dog"], clips, [0, 1], inbetween="motion", cfg=1.0)
    finally:
        del masked_pipe.generate
    assert out.shape == (2, 3, 8, 8, 8)
    torch.testing.assert_close(out[:, :, 0::2], clips, atol=1e-5, rtol=0)
    mid = bilateral_midframes(clips[:, :, :-1].transpose(1, 2), clips[:, :, 1:].transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out[:, :, 1:-1:2], mid, atol=0, rtol=0)
    # one call: the model's 4 frames at the end, all but the last known (the extend mask), the rest as given
    assert len(calls) == 1 and calls[0]["frames"] == 4 and calls[0]["cfg"] == 1.0
    known, mask = calls[0]["known_frames"]
    assert mask.tolist() == [1, 1, 1, 0]
    torch.testing.assert_close(known[:, :, :3], out[:, :, 4:7], atol=0, rtol=0)
    expected = generate(["a cat", "a dog"], [0, 1], size=8, frames=4, known_frames=(out[:, :, 4:], mask), cfg=1.0)
    torch.testing.assert_close(out[:, :, -1], expected[:, :, -1], atol=1e-5, rtol=0)
    assert not torch.allclose(out[:, :, -1], out[:, :, -2], atol=1e-2)
    with pytest.raises(GenError, match="inbetween must be one of model, motion, got 'flow'"):
        masked_pipe.interpolate(["a cat"], clips[:1], [0], inbetween="flow")


def test_known_frames_bad_input(masked_pipe):
    clips = torch.zeros((1, 3, 4, 8, 8))
    with pytest.raises(GenError, match=r"the known clips must be \(1 or 1, 3, 4, H, W\)"):
        masked_pipe.generate(["a cat"], [0], known_frames=(clips[:, :, :3], frame_mask("animate", 3)))
    with pytest.raises(GenError, match=r"the frame mask must be \(4,\)"):
        masked_pipe.generate(["a cat"], [0], known_frames=(clips, torch.ones(3)))
    with pytest.raises(GenError, match="not both"):
        masked_pipe.generate(["a cat"], [0], known_frames=(clips, torch.ones(4)), init_image=torch.zeros(3, 8, 8))
    with pytest.raises(GenError, match=r"marks no frame known \(row 1\)"):
        masked_pipe.generate(["a cat", "a dog"], [0, 1], known_frames=(clips, torch.tensor([[1.0, 0, 0, 0], [0] * 4])))


def test_gen_train_video_frame_masks(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "video", "--data", "toy-video", "--model", "video-dit-tiny", "--frames", "4",
                 "--size", "8", "--steps", "2",
                 "--batch", "2", "--n", "4", "--sample-every", "0", "--frame-masks", "animate,interpolate",
                 "--known-noise", "0.05", "--out", str(run)]) == 0
    pipe = VideoPipeline.from_pretrained(str(run / "pipeline"))
    assert pipe.denoiser.config.concat_keys == KEYS and pipe.masked_frames
    assert pipe.generate(["a ball"], [0], init_image=torch.zeros(3, 8, 8)).shape == (1, 3, 4, 8, 8)


@pytest.mark.parametrize("argv, message", [
    (["train", "video", "--frame-masks", "jump", "--out", "r"], "--frame-masks trains a masked-frame video model"),
    (["train", "image", "--frame-masks", "animate", "--out", "r"], "gen train video --frame-masks"),
    (["train", "video", "--known-noise", "0.1", "--out", "r"], "given with --frame-masks"),
    (["train", "video", "--init", "a", "--text-encoder-from", "b", "--out", "r"], "with --init the text encoder"),
])
def test_frame_mask_flags_bad_input(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_frozen_image_model_still_learns_to_read_the_known_frames(tmp_path):
    from gen.pipeline import Pipeline

    torch.manual_seed(0)
    enc = _text_encoder()
    image = _jiggle(models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim))
    base = Pipeline(image, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=2))
    base_dir = base.save_pretrained(tmp_path / "image")
    run = tmp_path / "run"
    assert main(["train", "video", "--data", "toy-video", "--init", str(base_dir), "--freeze-spatial",
                 "--frame-masks", "animate", "--frames", "4", "--size", "8", "--steps", "2", "--batch", "2",
                 "--n", "4", "--lr", "0.05", "--warmup", "1", "--ema-decay", "0", "--sample-every", "0",
                 "--out", str(run)]) == 0
    tuned = VideoPipeline.from_pretrained(str(run / "pipeline")).denoiser.state_dict()
    weight = tuned["patch.proj.weight"]  # (D, 3 + 3 + 1, p, p): the image's channels, then frames and mask
    assert torch.equal(weight[:, :3], image.state_dict()["patch.proj.weight"])  # the image's weights stay
    assert weight[:, 3:].abs().sum() > 0  # the new input channels trained from zero
    frozen = [k for k in image.state_dict() if k != "patch.proj.weight" and k in tuned]
    assert frozen and all(torch.equal(tuned[k], image.state_dict()[k]) for k in frozen)


def test_interpolate_past_the_trained_frames_runs_in_windows(masked_pipe):
    import warnings

    clips = torch.rand((1, 3, 4, 8, 8), generator=torch.Generator().manual_seed(5)) * 2 - 1
    calls = []
    generate = masked_pipe.generate

    def spy(*args, **kwargs):
        calls.append(kwargs["known_frames"][0].shape[2])
        return generate(*args, **kwargs)

    masked_pipe.generate = spy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # never past the 4 frames the model was trained on
            out = masked_pipe.interpolate(["a cat"], clips, [0])
    finally:
        del masked_pipe.generate
    assert out.shape == (1, 3, 8, 8, 8) and calls == [4, 4, 4]  # windows at 0, 2 and 4 of 8
    torch.testing.assert_close(out[:, :, 0::2], clips, atol=1e-5, rtol=0)
    assert out[:, :, 1::2].abs().sum() > 0


def test_more_frames_than_trained_extend_the_clip_by_windows(masked_pipe):
    from gen.pipeline.video import window_seeds

    still = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1
    first = masked_pipe.generate(["a cat"], [2], init_image=still)  # the trained 4 frames
    calls = []
    generate = masked_pipe.generate

    def spy(*args, **kwargs):
        calls.append((args[1], kwargs.get("known_frames")))
        return generate(*args, **kwargs)

    masked_pipe.generate = spy
    try:
        long = masked_pipe.generate(["a cat"], [2], frames=9, init_image=still)
    finally:
        del masked_pipe.generate
    assert long.shape == (1, 3, 9, 8, 8)
    torch.testing.assert_close(long[:, :, :4], first, atol=1e-5, rtol=0)  # the first window, as alone
    torch.testing.assert_close(long[0, :, 0], still, atol=1e-5, rtol=0)
    windows = [c for c in calls if c[1] is not None]  # 4 -> 6 -> 8 -> 10 frames (cut to 9)
    assert len(windows) == 3 and [c[0] for c in windows] == [window_seeds([2], w) for w in (1, 2, 3)]
    for seeds, (dense, mask) in windows:
        assert mask.tolist() == [1, 1, 0, 0]
    # each window started from the clip's last two frames so far
    torch.testing.assert_close(windows[0][1][0][:, :, :2], long[:, :, 2:4], atol=1e-6, rtol=0)
    assert window_seeds([5], 0) == [5] and window_seeds([5], 1) != [5]


def test_a_new_video_model_on_a_trained_frozen_text_encoder(tmp_path):
    from gen.pipeline import Pipeline

    torch.manual_seed(0)
    enc = _text_encoder()
    image = Pipeline(models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim), enc,
                     NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=2))
    source = image.save_pretrained(tmp_path / "image")
    run = tmp_path / "run"
    assert main(["train", "video", "--data", "toy-video", "--model", "video-dit-tiny", "--text-encoder-from",
                 str(source), "--frame-masks", "animate", "--frames", "4", "--size", "8", "--steps", "2",
                 "--batch", "2", "--n", "4", "--lr", "0.05", "--sample-every", "0", "--out", str(run)]) == 0
    tuned = VideoPipeline.from_pretrained(str(run / "pipeline"))
    before = enc.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in tuned.text_encoder.state_dict().items())
    assert tuned.denoiser.config.text_dim == enc.dim and tuned.masked_frames


def test_gen_eval_interp_on_a_masked_model(tmp_path, capsys, masked_pipe):
    import json

    folder = masked_pipe.save_pretrained(tmp_path / "masked")
    capsys.readouterr()
    assert main(["eval", "interp", "--model", str(folder), "--n", "2", "--frames", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 4 and report["given_fps"] == report["fps"] / 2
    assert report["given_fps"] == (masked_pipe.defaults.fps or 4.0)  # given at the model's rate, output at twice it
    assert report["psnr_gain_db"] == pytest.approx(report["model"]["psnr"] - report["linear_blend"]["psnr"])
    assert main(["eval", "interp", "--model", str(folder), "--n", "2", "--frames", "5"]) == 2
    assert "even and at least 4" in capsys.readouterr().err
