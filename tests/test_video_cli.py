"""The text-to-video pipeline and `gen video`: files, metadata, determinism, first-frame
conditioning, motion-module storage, video training from an image model, errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import models
from gen.cli import main
from gen.errors import GenError
from gen.pipeline import Pipeline, SamplingDefaults, VideoPipeline
from gen.video_io import read_video, read_video_comment
from samplers import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _text_encoder():
    return models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                       embed_dim=32, context_length=16))


def _jiggle(net, scale=0.05):
    with torch.no_grad():  # not a trained model: random weights everywhere, so outputs vary
        for p in net.parameters():
            p.add_(torch.randn_like(p) * scale)
    return net


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    """A tiny video pipeline (tubelet 2, 4 frames), and a tiny image pipeline."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pipes")
    enc = _text_encoder()
    net = _jiggle(models.create("video-dit-tiny", sample_size=8, frames=4, text_dim=enc.dim,
                                pooled_dim=enc.pooled_dim))
    video = VideoPipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"),
                          SamplingDefaults(size=8, steps=3, frames=4, fps=2.0)).save_pretrained(root / "video")
    image_net = _jiggle(models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim))
    image = Pipeline(image_net, enc, NoiseSchedule.create("cosine", prediction="v"),
                     SamplingDefaults(size=8, steps=3)).save_pretrained(root / "image")
    return {"video": video, "image": image}


def _video(capsys, *argv):
    code = main(["video", *argv])
    captured = capsys.readouterr()
    return code, captured.out.split(), captured.err


def test_writes_a_named_gif_with_its_parameters_and_never_overwrites(tmp_path, capsys, pipes, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _video(capsys, "a ball rolling left", "--model", str(pipes["video"]))
    assert code == 0 and out == [str(tmp_path / "a-ball-rolling-left.gif")]
    first = (tmp_path / "a-ball-rolling-left.gif").read_bytes()
    code, out, _ = _video(capsys, "a ball rolling left", "--model", str(pipes["video"]))
    assert code == 0 and out == [str(tmp_path / "a-ball-rolling-left-1.gif")]
    # same arguments and seed: the identical file; the first one is untouched
    assert (tmp_path / "a-ball-rolling-left-1.gif").read_bytes() == first
    frames, fps = read_video(tmp_path / "a-ball-rolling-left.gif")
    assert frames.shape == (4, 8, 8, 3) and fps == pytest.approx(2.0)
    meta = json.loads(read_video_comment(tmp_path / "a-ball-rolling-left.gif"))
    assert meta["prompt"] == "a ball rolling left" and meta["seed"] == 0 and meta["frames"] == 4
    assert meta["steps"] == 3 and meta["fps"] == 2.0 and meta["model"] == str(pipes["video"])
    _, out, _ = _video(capsys, "a ball rolling left", "--model", str(pipes["video"]), "--seed", "5")
    assert (tmp_path / "a-ball-rolling-left-2.gif").read_bytes() != first


def test_formats_frames_fps_and_the_python_api(tmp_path, capsys, pipes):
    code, (folder,), _ = _video(capsys, "a red star", "--model", str(pipes["video"]), "--format", "png-frames",
                                "--out", str(tmp_path), "--frames", "2", "--fps", "6")
    assert code == 0
    frames, fps = read_video(folder)
    assert frames.shape == (2, 8, 8, 3) and fps == 6.0
    assert json.loads(read_video_comment(folder))["frames"] == 2
    pytest.importorskip("av")
    code, (mp4,), _ = _video(capsys, "a red star", "--model", str(pipes["video"]), "--out", str(tmp_path / "x.mp4"))
    assert code == 0 and mp4.endswith("x.mp4")
    assert json.loads(read_video_comment(mp4))["prompt"] == "a red star"
    clips = VideoPipeline.from_pretrained(str(pipes["video"]))("a red star", seed=0)
    assert len(clips) == 1 and len(clips[0]) == 4 and clips[0][0].size == (8, 8)
    gif = np.asarray(read_video(tmp_path / "a-red-star.gif")[0]) if (tmp_path / "a-red-star.gif").exists() else None
    assert gif is None  # png-frames and mp4 wrote no gif


def test_frames_past_the_trained_count_warn(tmp_path, capsys, pipes):
    code, _, err = _video(capsys, "a cat", "--model", str(pipes["video"]), "--frames", "6", "--out", str(tmp_path))
    assert code == 0 and "past the 4 the model was trained on" in err


@pytest.mark.parametrize("argv, message", [
    (["--frames", "3"], "not divisible by the model's tubelet depth 2"),
    (["--size", "7"], "--size 7 is not divisible by 2"),
    (["--fps", "0"], "--fps must be positive"),
    (["--fps", "-2"], "--fps must be positive"),
    (["--out", "clip.webm"], "--out must end in .gif or .mp4"),
    (["--init-image", "missing.png"], "--init-image missing.png does not exist"),
    (["--frame-cfg", "2"], "--frame-cfg 2 guides a masked-frame model's known frames"),
    (["--frame-cfg", "-1"], "--frame-cfg must be between 0 and 50"),
])
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, capsys, pipes, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = _video(capsys, "a cat", "--model", str(pipes["video"]), *argv)
    assert code == 2 and message in err and not out
    assert list(tmp_path.iterdir()) == []


def test_unreadable_init_image_and_model_kinds(tmp_path, capsys, pipes, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    code, _, err = _video(capsys, "a cat", "--model", str(pipes["video"]), "--init-image", "broken.png")
    assert code == 2 and "broken.png is not a readable image" in err
    code, _, err = _video(capsys, "a cat", "--model", str(pipes["image"]))
    assert code == 2 and "text-to-image model; use it with `gen image`" in err
    code = main(["image", "a cat", "--model", str(pipes["video"])])
    assert code == 2 and "text-to-video model; use it with `gen video`" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png"]


def test_init_image_becomes_frame_zero(tmp_path, capsys, pipes):
    still = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(still).save(tmp_path / "still.png")
    for sampler in ("ddim", "dpm++2m"):
        code, (gif,), _ = _video(capsys, "a cat", "--model", str(pipes["video"]), "--init-image",
                                 str(tmp_path / "still.png"), "--sampler", sampler,
                                 "--out", str(tmp_path / f"{sampler}.gif"), "--format", "gif")
        assert code == 0
    pipe = VideoPipeline.from_pretrained(str(pipes["video"]))
    init = torch.from_numpy(still).permute(2, 0, 1).float() / 127.5 - 1
    clip = pipe.generate(["a cat"], [0], init_image=init)
    assert torch.equal(((clip[0, :, 0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0),
                       torch.from_numpy(still))
    free = pipe.generate(["a cat"], [0])
    assert not torch.allclose(free[0, :, 1:], clip[0, :, 1:])  # the other frames follow the still
    other = pipe.generate(["a cat"], [1], init_image=init)  # the seed draws the rest, frame 0 stays
    torch.testing.assert_close(other[0, :, 0], init, atol=1e-5, rtol=0)
    assert not torch.allclose(other[0, :, 1:], clip[0, :, 1:])
    # the samplers' `known` holds frame 0 for diffusers' schedulers too (to float round-off)
    euler = pipe.generate(["a cat"], [0], init_image=init, sampler="diffusers:EulerDiscreteScheduler")
    torch.testing.assert_close(euler[0, :, 0], init, atol=1e-4, rtol=0)


def test_init_image_of_another_size_is_resized_and_said_once(tmp_path, capsys, pipes):
    Image.fromarray(np.full((20, 12, 3), 200, dtype=np.uint8)).save(tmp_path / "big.png")
    code, (gif,), err = _video(capsys, "a cat", "--model", str(pipes["video"]), "--init-image",
                               str(tmp_path / "big.png"), "--out", str(tmp_path / "v.gif"), "--format", "gif")
    assert code == 0 and err.count("resized to 8x8") == 1


def test_a_motion_module_is_stored_as_its_difference_from_the_shipped_image_model(tmp_path):
    base = Pipeline.from_pretrained("toy-image-dit-ft")
    net = models.video_from_image(base.denoiser, frames=4, temporal_mlp_ratio=1.0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "temporal" in name:
                p.add_(torch.randn_like(p) * 0.01)
    pipe = VideoPipeline(net, base.text_encoder, base.schedule, SamplingDefaults(size=32, steps=2, frames=4, fps=2.0))
    path = pipe.save_pretrained(tmp_path / "motion", dtype=torch.float16, base="toy-image-dit-ft")
    from safetensors.torch import load_file

    stored = load_file(str(path / "denoiser" / "model.safetensors"))
    assert stored and all("temporal" in k for k in stored)
    assert not (path / "text_encoder").exists()
    assert json.loads((path / "model_index.json").read_text())["text_encoder"] == "base"
    back = VideoPipeline.from_pretrained(str(path))
    want = {k: v.half().float() for k, v in net.state_dict().items()}
    assert all(torch.equal(want[k], v) for k, v in back.denoiser.state_dict().items())
    with pytest.raises(Exception, match="not a shipped pipeline"):
        pipe.save_pretrained(tmp_path / "other", base="no-such-model")
    # the folder records its base's weights: a base that changed since is refused, not mixed in
    index = json.loads((path / "model_index.json").read_text())
    from gen.pipeline import WEIGHTS_DIR
    from gen.pipeline.folder import base_digest

    assert index["format"] == 1 and index["base_sha256"] == base_digest(WEIGHTS_DIR / "toy-image-dit-ft")
    (path / "model_index.json").write_text(json.dumps({**index, "base_sha256": "0" * 64}))
    with pytest.raises(GenError, match="whose weights have changed since"):
        VideoPipeline.from_pretrained(str(path))


def test_a_low_rank_fine_tune_is_stored_as_the_factors_of_its_difference(tmp_path):
    base = Pipeline.from_pretrained("toy-image-dit-ft")
    net = copy.deepcopy(base.denoiser)
    g = torch.Generator().manual_seed(0)
    matrices = [(k, p) for k, p in net.named_parameters() if p.dim() == 2 and min(p.shape) > 16]
    low, full = matrices[:3], matrices[3]
    with torch.no_grad():
        for _, p in low:  # a rank-4 change, as a merged LoRA of rank 4 makes
            p.add_(0.01 * torch.randn(p.shape[0], 4, generator=g) @ torch.randn(4, p.shape[1], generator=g))
        full[1].add_(0.01 * torch.randn(full[1].shape, generator=g))  # a full-rank change: stored whole
    pipe = Pipeline(net, base.text_encoder, base.schedule, base.defaults)
    path = pipe.save_pretrained(tmp_path / "ft", dtype=torch.float16, base="toy-image-dit-ft", rank=4)
    from safetensors.torch import load_file

    stored = load_file(str(path / "denoiser" / "model.safetensors"))
    assert set(stored) == {k + s for k, _ in low for s in (".delta_up", ".delta_down")} | {full[0]}
    assert all(stored[k + ".delta_up"].shape == (p.shape[0], 4) for k, p in low)
    back = Pipeline.from_pretrained(str(path)).denoiser.state_dict()
    for k, v in net.state_dict().items():  # each weight to the half precision it was stored in
        torch.testing.assert_close(back[k], v, atol=2e-3, rtol=1e-2)
    assert torch.equal(back[full[0]], full[1].detach().half().float())


def test_the_shipped_frame0_model_is_a_rank_32_change_of_the_image_model():
    from gen.pipeline import WEIGHTS_DIR

    tuned, base = Pipeline.from_pretrained("toy-frame0-dit"), Pipeline.from_pretrained("toy-image-dit-ft")
    a, b = tuned.denoiser.state_dict(), base.denoiser.state_dict()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert len(changed) == 56 and all(a[k].dim() == 2 for k in changed)
    assert all(torch.linalg.matrix_rank((a[k] - b[k]).double(), rtol=1e-4) <= 32 for k in changed)
    index = json.loads((WEIGHTS_DIR / "toy-frame0-dit" / "model_index.json").read_text())
    assert index["text_encoder"] == "base" and index["base"] == "toy-image-dit-ft"
    cascade = json.loads((WEIGHTS_DIR / "toy-video-cascade" / "model_index.json").read_text())
    assert cascade["image"] == {"shipped": "toy-frame0-dit"} and cascade["stage_defaults"]["image"] == {"cfg": 2.0}


@pytest.mark.parametrize("start", ["image", "cascade"])
def test_train_video_from_an_image_model_keeps_the_frozen_spatial_layers(tmp_path, pipes, start):
    init = pipes["image"]
    if start == "cascade":  # a cascade (the shipped default is one) starts from its text-to-image base
        from gen.pipeline import Cascade, SuperResolution

        sr = SuperResolution(models.create("sr-unet-tiny", sample_size=8), None, NoiseSchedule.create("cosine"),
                             SamplingDefaults(size=8, steps=2, cfg=1.0, scale=2, sr_noise=0.2))
        init = Cascade(Pipeline.from_pretrained(str(pipes["image"])), [sr]).save_pretrained(tmp_path / "cascade")
    run = tmp_path / "run"
    code = main(["train", "video", "--data", "toy-video", "--init", str(init), "--freeze-spatial",
                 "--frames", "2", "--size", "8", "--fps", "1", "--steps", "2", "--batch", "2", "--n", "8",
                 "--sample-every", "2", "--out", str(run)])
    assert code == 0
    image = Pipeline.from_pretrained(str(pipes["image"]))
    video = VideoPipeline.from_pretrained(str(run / "pipeline"))
    image_state = image.denoiser.state_dict()
    for key, value in video.denoiser.state_dict().items():
        if "temporal" in key:
            if key.endswith("ada.weight"):  # zero at init (adaLN-Zero): moved by training
                assert value.abs().max() > 0, key
        else:
            assert torch.equal(value, image_state[key]), key
    text = image.text_encoder.state_dict()
    assert all(torch.equal(v, text[k]) for k, v in video.text_encoder.state_dict().items())
    assert (run / "samples" / "step-0000002.png").is_file()
    code = main(["train", "image", "--freeze-spatial", "--out", str(tmp_path / "bad")])
    assert code == 2


def test_train_video_continues_a_video_model_with_a_motion_path_added(tmp_path, pipes):
    # --init a video pipeline with model_overrides that add layers (temporal_conv): every
    # weight it had is kept, the new motion path starts at identity and trains.
    config = tmp_path / "motion.json"
    config.write_text(json.dumps({"model_overrides": {"temporal_conv": 4}}))
    run = tmp_path / "run"
    code = main(["train", "video", "--config", str(config), "--data", "toy-video", "--init", str(pipes["video"]),
                 "--freeze-spatial", "--frames", "4", "--size", "8", "--fps", "2", "--steps", "2", "--batch", "2",
                 "--n", "8", "--sample-every", "0", "--out", str(run)])
    assert code == 0
    start = VideoPipeline.from_pretrained(str(pipes["video"])).denoiser.state_dict()
    net = VideoPipeline.from_pretrained(str(run / "pipeline")).denoiser
    assert net.config.temporal_conv == 4
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.items() if "temporal" not in k)
    assert set(state) - set(start) == {k for k in state if "temporal_convs" in k}
    assert all(state[k].abs().max() > 0 for k in state if k.endswith("proj_out.weight"))  # zero at init


def test_joint_training_feeds_images_as_one_frame_clips_that_skip_the_temporal_layers(tmp_path):
    # Every step on images (ratio 1): the temporal layers see no frames to mix, get no
    # gradient and stay at their zero start; the spatial layers train.
    run = tmp_path / "joint"
    code = main(["train", "video", "--data", "toy-video", "--model", "video-unet-tiny", "--image-ratio", "1",
                 "--frames", "2", "--size", "8", "--fps", "1", "--steps", "2", "--batch", "2", "--n", "8",
                 "--sample-every", "0", "--out", str(run)])
    assert code == 0
    net = VideoPipeline.from_pretrained(str(run / "pipeline")).denoiser
    state = net.state_dict()
    temporal_out = [v for k, v in state.items() if "temporal" in k and ("conv.weight" in k or "to_out" in k)]
    assert temporal_out and all(v.abs().max() == 0 for v in temporal_out)  # zero-initialised, untouched
    fresh = models.create("video-unet-tiny", sample_size=8, frames=2, text_dim=net.config.text_dim,
                          pooled_dim=net.config.pooled_dim)
    zero_at_start = [k for k, v in fresh.state_dict().items()
                     if "temporal" not in k and v.is_floating_point() and v.abs().max() == 0 and v.dim() > 1]
    assert zero_at_start and any(state[k].abs().max() > 0 for k in zero_at_start)  # the spatial layers trained
    assert main(["train", "image", "--image-ratio", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert main(["train", "video", "--model", "video-dit-tiny", "--image-ratio", "0.5", "--out",
                 str(tmp_path / "bad2")]) == 2


def test_video_training_and_sampling_in_a_video_vae_latent_space(tmp_path, capsys):
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--video", "--data", "toy-video", "--frames", "5", "--size", "16", "--steps", "1",
                 "--batch", "2", "--n", "4", "--sample-every", "0", "--out", str(vae)]) == 0
    run = tmp_path / "run"
    common = ["train", "video", "--data", "toy-video", "--model", "video-dit-tiny", "--vae", str(vae / "vae"),
              "--size", "16", "--fps", "2", "--steps", "1", "--batch", "2", "--n", "4", "--sample-every", "0"]
    assert main([*common, "--frames", "5", "--out", str(tmp_path / "bad")]) == 2  # 3 latent frames, tubelet 2
    assert "3 latent frames not divisible by the model's tubelet depth 2" in capsys.readouterr().err
    assert main([*common, "--frames", "7", "--out", str(run)]) == 0
    pipe = VideoPipeline.from_pretrained(str(run / "pipeline"))
    assert pipe.vae is not None and pipe.latent_shape(16, 7) == (pipe.vae.latent_channels, 4, 4, 4)
    assert pipe.generate(["a cat"], [0], steps=1).shape == (1, 3, 7, 16, 16)
    capsys.readouterr()
    assert main(["video", "a cat", "--model", str(run / "pipeline"), "--frames", "6", "--steps", "1",
                 "--out", str(tmp_path / "x.gif")]) == 2
    assert "needs 1 + a multiple of 2" in capsys.readouterr().err and not (tmp_path / "x.gif").exists()


def test_clip_wide_temporal_blocks_need_sizes_their_pooling_divides(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    enc = _text_encoder()
    net = _jiggle(models.create("video-dit-tiny", sample_size=8, frames=4, tubelet=1, temporal_mode="clip",
                                temporal_cross_attention=True, text_dim=enc.dim, pooled_dim=enc.pooled_dim))
    assert net.size_multiple == 4  # patch 2 x pooling 2
    path = VideoPipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"),
                         SamplingDefaults(size=8, steps=2, frames=4, fps=2.0)).save_pretrained(tmp_path / "clip")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    code, _, err = _video(capsys, "a cat", "--model", str(path), "--size", "10")
    assert code == 2 and "--size 10 is not divisible by 4 (the model's patch size times its temporal pooling)" in err
    assert list(out.iterdir()) == []
    code, printed, _ = _video(capsys, "a cat", "--model", str(path), "--size", "12")
    assert code == 0 and read_video(printed[0])[0].shape == (4, 12, 12, 3)
