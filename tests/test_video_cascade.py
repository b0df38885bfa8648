"""The video cascade: frame 0 from a text-to-image pipeline, a masked-frame model animates
it, temporal super-resolution doubles the frame rate, spatial stages enlarge every frame;
flags stop it earlier; its folder round-trips; `gen video` runs it."""

from __future__ import annotations

import pytest
import torch

import models
from gen.cli import main
from gen.errors import GenError
from gen.pipeline import Pipeline, SamplingDefaults, SuperResolution, VideoCascade, VideoPipeline
from gen.video_io import read_video
from samplers import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _jiggle(net):
    with torch.no_grad():  # untrained but not zero: outputs depend on every input
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def cascade():
    torch.manual_seed(0)
    enc = models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                      embed_dim=32, context_length=16))
    schedule = NoiseSchedule.create("cosine", prediction="v")
    image = Pipeline(_jiggle(models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim)),
                     enc, schedule, SamplingDefaults(size=8, steps=2))
    net = _jiggle(models.create("video-dit-tiny", sample_size=8, frames=4, tubelet=1, text_dim=enc.dim,
                                pooled_dim=enc.pooled_dim, concat_keys=("frames", "frame_mask")))
    video = VideoPipeline(net, enc, schedule, SamplingDefaults(size=8, steps=2, frames=4, fps=2.0))
    sr = SuperResolution(_jiggle(models.create("sr-unet-tiny", sample_size=8)), None, schedule,
                         SamplingDefaults(size=8, steps=2, cfg=1.0, scale=2, sr_noise=0.2))
    return VideoCascade(image, video, temporal=video, spatial=[sr])


def test_what_it_draws_and_where_it_stops(cascade):
    assert cascade.sizes == [8, 16] and cascade.rates == [(4, 2.0), (8, 4.0)]
    full = cascade.generate(["a ball rolling left"], [0])
    assert full.shape == (1, 3, 8, 16, 16) and full.abs().max() <= 1
    base = cascade.generate(["a ball rolling left"], [0], size=8, fps=2.0)
    assert base.shape == (1, 3, 4, 8, 8)
    # frame 0 is the image stage's picture; temporal SR keeps the base frames at the even positions
    first = cascade.image.generate(["a ball rolling left"], [0])
    torch.testing.assert_close(base[:, :, 0], first, atol=1e-5, rtol=0)
    doubled = cascade.generate(["a ball rolling left"], [0], size=8)
    assert doubled.shape == (1, 3, 8, 8, 8)
    torch.testing.assert_close(doubled[:, :, 0::2], base, atol=1e-5, rtol=0)
    # each frame enlarged by the spatial stage with its clip's seed (shared noise)
    frame = cascade.spatial[0].upscale(doubled[:, :, 3], [0])
    torch.testing.assert_close(full[:, :, 3], frame, atol=1e-5, rtol=0)


def test_init_image_replaces_the_image_stage(cascade):
    still = torch.rand(3, 8, 8) * 2 - 1
    clip = cascade.generate(["a cat"], [0], size=8, fps=2.0, init_image=still)
    torch.testing.assert_close(clip[0, :, 0], still, atol=1e-5, rtol=0)


def test_unreachable_outputs_name_the_reachable_ones(cascade):
    with pytest.raises(GenError, match="draws frames of 8, 16 pixels"):
        cascade.plan(size=12)
    with pytest.raises(GenError, match="--fps 3: this video cascade draws clips at 2 or 4 fps"):
        cascade.plan(fps=3.0)
    with pytest.raises(GenError, match="--frames 0"):
        cascade.plan(frames=0)
    assert cascade.plan() == (1, 1, 4) and cascade.plan(size=8, fps=2.0) == (0, 0, 4)
    # more frames than the video stage draws: it extends its clip first (temporal SR doubles it)
    assert cascade.plan(frames=12) == (1, 1, 6) and cascade.plan(fps=2.0, frames=7) == (1, 0, 7)
    assert cascade.plan(frames=3) == (1, 1, 4)  # fewer: the first ones


def test_longer_and_shorter_clips_keep_the_default_clips_frames(cascade):
    clip = cascade.generate(["a cat"], [0], size=8, fps=4.0)
    longer = cascade.generate(["a cat"], [0], size=8, fps=4.0, frames=12)
    assert clip.shape[2] == 8 and longer.shape[2] == 12
    # the video stage's first window is the default clip's: temporal SR keeps those frames as given
    torch.testing.assert_close(longer[:, :, 0:8:2], clip[:, :, 0::2], atol=1e-5, rtol=0)
    torch.testing.assert_close(cascade.generate(["a cat"], [0], size=8, frames=3), clip[:, :, :3],
                               atol=1e-5, rtol=0)


def test_folder_round_trip_stores_a_reused_stage_once(tmp_path, cascade):
    folder = cascade.save_pretrained(tmp_path / "vc")
    assert sorted(p.name for p in folder.iterdir()) == ["image", "model_index.json", "sr-1", "video"]
    loaded = VideoPipeline.from_pretrained(str(folder))
    assert isinstance(loaded, VideoCascade) and loaded.temporal is loaded.video
    torch.testing.assert_close(loaded.generate(["a cat"], [1]), cascade.generate(["a cat"], [1]), atol=1e-5, rtol=0)


def test_stage_defaults_run_the_image_and_temporal_stages_and_round_trip(tmp_path, capsys, cascade):
    import copy

    own = copy.copy(cascade)  # the fixture's stages, its own stage_defaults
    own.stage_defaults = {}
    own.set_stage_defaults("image", cfg=1.0, steps=3)
    own.set_stage_defaults("temporal", cfg=1.0)
    prompts = ["a ball rolling left"]
    first = own.generate(prompts, [0], size=8, fps=2.0)[:, :, 0]
    torch.testing.assert_close(first, cascade.image.generate(prompts, [0], cfg=1.0, steps=3), atol=1e-5, rtol=0)
    assert not torch.allclose(first, cascade.image.generate(prompts, [0]))
    base = own.generate(prompts, [0], size=8, fps=2.0)
    doubled = own.generate(prompts, [0], size=8)
    torch.testing.assert_close(doubled, cascade.video.interpolate(prompts, base, [0], cfg=1.0), atol=1e-5, rtol=0)
    # a cfg given to generate is the video stage's and the temporal one's: it beats the cascade's
    given = own.generate(prompts, [0], size=8, cfg=2.0)
    torch.testing.assert_close(given, cascade.video.interpolate(
        prompts, own.generate(prompts, [0], size=8, fps=2.0, cfg=2.0), [0], cfg=2.0), atol=1e-5, rtol=0)
    folder = own.save_pretrained(tmp_path / "vc")
    loaded = VideoPipeline.from_pretrained(str(folder))
    assert loaded.stage_defaults == {"image": {"cfg": 1.0, "steps": 3}, "temporal": {"cfg": 1.0}}
    torch.testing.assert_close(loaded.generate(prompts, [0], size=8), doubled, atol=1e-5, rtol=0)
    with pytest.raises(GenError, match="'video' is not a stage that takes them; known: image, temporal"):
        own.set_stage_defaults("video", cfg=2.0)
    with pytest.raises(GenError, match="'size' is not a setting the image stage takes here; known: sampler, "
                                       "steps, cfg$"):
        own.set_stage_defaults("image", size=16)
    with pytest.raises(GenError, match="'inbetween' is not a setting the image stage takes here"):
        own.set_stage_defaults("image", inbetween="motion")
    with pytest.raises(GenError, match="inbetween must be one of model, motion, got 'flow'"):
        own.set_stage_defaults("temporal", inbetween="flow")
    assert cascade.stage_defaults == {}
    # gen eval interp on a cascade measures its temporal stage as the cascade runs it
    import json

    assert main(["eval", "interp", "--model", str(folder), "--n", "2", "--frames", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cfg"] == 1.0
    assert main(["eval", "interp", "--model", str(folder), "--n", "2", "--frames", "4", "--cfg", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cfg"] == 2.0
    # motion-compensated in-betweens: the cascade runs its temporal stage so, and gen eval interp measures that
    own.set_stage_defaults("temporal", inbetween="motion")
    torch.testing.assert_close(own.generate(prompts, [0], size=8), cascade.video.interpolate(
        prompts, base, [0], cfg=1.0, inbetween="motion"), atol=1e-5, rtol=0)
    folder = own.save_pretrained(tmp_path / "vc-motion")
    assert main(["eval", "interp", "--model", str(folder), "--n", "2", "--frames", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inbetween"] == "motion"
    assert main(["eval", "interp", "--model", str(folder), "--n", "2", "--frames", "4", "--inbetween", "model",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inbetween"] == "model"
    assert main(["eval", "video", "--model", str(folder), "--n", "2", "--inbetween", "motion"]) == 2
    assert "--inbetween motion sets how gen eval interp makes its new frames" in capsys.readouterr().err


def test_gen_video_runs_the_cascade_and_stops_at_flags(tmp_path, capsys, cascade):
    folder = cascade.save_pretrained(tmp_path / "vc")
    out = tmp_path / "a.gif"
    assert main(["video", "a ball rolling left", "--model", str(folder), "--out", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape[:3] == (8, 16, 16) and fps == pytest.approx(4.0, rel=0.05)
    small = tmp_path / "b.gif"
    assert main(["video", "a ball rolling left", "--model", str(folder), "--fps", "2", "--size", "8",
                 "--out", str(small)]) == 0
    frames, fps = read_video(small)
    assert frames.shape[:3] == (4, 8, 8) and fps == pytest.approx(2.0, rel=0.05)
    assert main(["video", "a ball", "--model", str(folder), "--frames", "12", "--out", str(tmp_path / "d.gif")]) == 0
    assert read_video(tmp_path / "d.gif")[0].shape[:3] == (12, 16, 16)  # extended, then doubled
    capsys.readouterr()
    assert main(["video", "a ball", "--model", str(folder), "--fps", "3", "--out", str(tmp_path / "c.gif")]) == 2
    err = capsys.readouterr().err
    assert "draws clips at 2 or 4 fps" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.gif").exists()
