"""`gen eval image|video` and gen.evaluate: a perfect generator scores like the renders."""

from __future__ import annotations

import json

import pytest
import torch

import models
from gen.cli import main
from gen.errors import GenError
from gen.evaluate import clip_prompts, evaluate_image, image_prompts, to_clips, to_images
from gen.pipeline import WEIGHTS_DIR, Pipeline, SamplingDefaults
from metrics.toy_judge import ImageJudge
from samplers import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")


class Perfect:
    """A stand-in generator that returns the toy world's own render of each prompt."""

    def __init__(self, pixels, size, frames=None, fps=None):
        self.pixels = pixels
        self.defaults = SamplingDefaults(size=size, steps=1, frames=frames, fps=fps)

    def generate(self, prompts, seeds, **_):
        batch = self.pixels[seeds]
        return to_clips(batch) if batch.ndim == 5 else to_images(batch)


@pytest.fixture(scope="module")
def judge():
    return ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image")


@pytest.fixture(scope="module")
def scene():
    from metrics.scene_judge import SceneJudge

    return SceneJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-scene")


def test_a_generator_that_draws_the_renders_scores_like_them(judge, scene):
    n = 16
    _, renders = image_prompts(n, 32, seed=5)  # every scene kind in turn
    report, images = evaluate_image(Perfect(renders, 32), judge, n=n, seed=5, kid_subsets=5, scene_judge=scene)
    assert images.shape == (n, 3, 32, 32)
    assert report["generated"] == report["renders"]
    assert report["renders"]["all"] == 1.0  # the shipped judges read these renders right
    assert report["generated"]["n"] == {"object": 8, "color": report["generated"]["n"]["color"], "hat": 8,
                                        "hat_color": report["generated"]["n"]["hat_color"], "count": 4,
                                        "relation": 4, "all": 16}
    assert report["toy_fid"] == pytest.approx(0.0, abs=1e-4)
    assert report["prompts_judged"] == n and report["prompts_unread"] == 0


def test_a_generator_of_the_wrong_pictures_scores_worse(judge, scene):
    n = 16
    _, renders = image_prompts(n, 32, seed=5)
    shuffled = renders[[(i + 4) % n for i in range(n)]]  # every prompt gets another prompt's render (same kind)
    report, _ = evaluate_image(Perfect(shuffled, 32), judge, n=n, seed=5, kid_subsets=5, scene_judge=scene)
    assert report["generated"]["all"] < 0.5
    assert report["generated"]["count"] < 1 and report["generated"]["relation"] < 1
    assert report["toy_fid"] == pytest.approx(0.0, abs=1e-4)  # same set of images: same distribution


def test_prompts_no_judge_can_read_count_for_fid_only(judge, scene):
    n = 4
    _, renders = image_prompts(n, 32, seed=5)
    prompts = ["a red cat", "two blue balls", "a cat left of a dog", "a dragon in a castle"]
    report, _ = evaluate_image(Perfect(renders, 32), judge, n=n, prompts=prompts, seed=5, kid_subsets=2,
                               scene_judge=scene)
    assert report["prompts_judged"] == 3 and report["prompts_unread"] == 1
    assert report["generated"]["n"]["object"] == 1 and report["generated"]["n"]["count"] == 1
    without, _ = evaluate_image(Perfect(renders, 32), judge, n=n, prompts=prompts, seed=5, kid_subsets=2)
    assert without["prompts_judged"] == 1  # no scene judge: relations and counts go unread


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    torch.manual_seed(0)
    enc = models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                      embed_dim=32, context_length=16))
    net = models.create("dit-tiny", sample_size=16, patch_size=4, text_dim=enc.dim, pooled_dim=enc.pooled_dim)
    pipe = Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=16, steps=2))
    return pipe.save_pretrained(tmp_path_factory.mktemp("pipes") / "tiny")


def test_gen_eval_image_writes_samples_and_a_report(tmp_path, capsys, tiny_pipe):
    out = tmp_path / "ev"
    code = main(["eval", "image", "--model", str(tiny_pipe), "--n", "4", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert printed["out"] == str(out) and printed["toy_fid"] == report["toy_fid"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    assert "| object |" in (out / "report.md").read_text()
    assert len(report["per_image"]) == 4 and 0 <= report["generated"]["all"] <= 1
    # never overwrites: the same folder again is refused
    code = main(["eval", "image", "--model", str(tiny_pipe), "--n", "4", "--out", str(out)])
    assert code == 2 and "exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--n", "1"], "--n must be between 2"),
    (["--prompts", "nope.txt"], "--prompts nope.txt does not exist"),
])
def test_gen_eval_image_bad_input(tmp_path, capsys, tiny_pipe, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "image", "--model", str(tiny_pipe), *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_clip_prompts_match_the_toy_clips():
    from gen.toyworld import toy_clip

    captions, renders = clip_prompts(3, 16, 4, 2.0, seed=7)
    assert renders.shape == (3, 4, 16, 16, 3)
    assert captions[2] == toy_clip(2, size=16, frames=4, fps=2.0, seed=7).caption


def test_gen_eval_image_reports_clipscore_when_a_clip_is_here(tmp_path, capsys, tiny_pipe, monkeypatch):
    import json as json_

    from open_clip.model import CLIP
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    folder = tmp_path / "clip"
    folder.mkdir()
    torch.manual_seed(4)
    save_file({k: v.contiguous() for k, v in CLIP(**cfg).state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json_.dumps({"model_cfg": cfg}))
    out = tmp_path / "ev"
    assert main(["eval", "image", "--model", str(tiny_pipe), "--n", "4", "--clip", str(folder),
                 "--out", str(out), "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    clip = report["clip_score"]
    assert clip["reduction"] == "torchmetrics" and clip["value"] == pytest.approx(max(100 * clip["cosine_mean"], 0))
    assert "CLIPScore" in (out / "report.md").read_text()
    # the default CLIP without its weights here: the report says why, the evaluation still runs
    for var in ("GEN_WEIGHTS", "TORCH_HOME", "HF_HUB_CACHE", "HOME"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    assert main(["eval", "image", "--model", str(tiny_pipe), "--n", "2", "--out", str(tmp_path / "ev2"), "--json"]) == 0
    clip = json.loads((tmp_path / "ev2" / "report.json").read_text())["clip_score"]
    assert clip["value"] is None and "no CLIP weights" in clip["note"]
    capsys.readouterr()
    assert main(["eval", "image", "--model", str(tiny_pipe), "--n", "2", "--clip", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "ev3")]) == 2
    assert "--clip" in capsys.readouterr().err and not (tmp_path / "ev3").exists()


def test_video_evaluation_of_the_renders_scores_like_them_per_motion(judge):
    from gen.evaluate import evaluate_video
    from metrics.video_judge import VideoJudge

    video_judge = VideoJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-video")
    n = 16
    _, renders = clip_prompts(n, 32, 8, 4.0, seed=5)
    report, _ = evaluate_video(Perfect(renders, 32, frames=8, fps=4.0), video_judge, judge, n=n, seed=5)
    assert report["generated"]["motion"] == report["renders"]["motion"] == 1.0
    by_kind = report["motion_accuracy_by_kind"]
    assert sum(v["n"] for v in by_kind.values()) == n and all(v["accuracy"] == 1.0 for v in by_kind.values())
    confusion = report["motion_confusion"]  # every clip judged as asked: the matrix is diagonal
    assert confusion == {m: {m: v["n"]} for m, v in by_kind.items()}
    floor = report["static_frame0"]  # frame 0 held still: the object stays, the motion is gone
    assert floor["object"] >= 0.9 and floor["motion"] < report["renders"]["motion"]
    # Every clip played backwards: left becomes right, growing shrinking, ...
    backwards = renders[:, ::-1].copy()
    report, _ = evaluate_video(Perfect(backwards, 32, frames=8, fps=4.0), video_judge, judge, n=n, seed=5)
    by_kind = report["motion_accuracy_by_kind"]
    for motion in ("left", "right", "up", "down", "growing", "shrinking"):
        if motion in by_kind:
            assert by_kind[motion]["accuracy"] < 0.5, (motion, by_kind[motion])
    assert report["generated"]["object"] == 1.0
    if "left" in report["motion_confusion"]:
        assert "right" in report["motion_confusion"]["left"]
    # given prompts (toy clip captions) are cycled to n; a caption the judge cannot read is refused
    captions, _ = clip_prompts(n, 32, 8, 4.0, seed=5)
    report, _ = evaluate_video(Perfect(renders, 32, frames=8, fps=4.0), video_judge, judge, n=n, seed=5,
                               prompts=captions[:4])
    assert [row["prompt"] for row in report["per_clip"]] == captions[:4] * 4
    firsts = []

    class Recording(Perfect):
        def generate(self, prompts, seeds, init_image=None, **kw):
            firsts.append(init_image)
            return super().generate(prompts, seeds, **kw)

    report, _ = evaluate_video(Recording(renders, 32, frames=8, fps=4.0), video_judge, judge, n=n, seed=5,
                               batch=6, init_frames=True)
    assert report["init_frames"] and torch.equal(torch.cat(firsts), to_clips(renders)[:, :, 0])
    with pytest.raises(GenError, match="not --prompts"):
        evaluate_video(Perfect(renders, 32, frames=8, fps=4.0), video_judge, judge, n=n, seed=5,
                       prompts=captions, init_frames=True)
    with pytest.raises(GenError, match="judges toy clip captions"):
        evaluate_video(Perfect(renders, 32, frames=8, fps=4.0), video_judge, judge, n=n, seed=5,
                       prompts=["a cat in a hat"])


class Between:
    """A stand-in temporal SR: frames between the given ones as their linear blend (the last
    one holds the frame before), or each given frame repeated (`hold`)."""

    def __init__(self, size, hold=False):
        self.defaults = SamplingDefaults(size=size, steps=1, frames=8, fps=8.0)
        self.hold = hold

    def interpolate(self, prompts, clips, seeds, **_):
        out = clips.repeat_interleave(2, dim=2)
        if not self.hold:
            out[:, :, 1:-1:2] = (clips[:, :, :-1] + clips[:, :, 1:]) / 2
        return out


def test_interpolation_is_measured_against_the_linear_blend(judge):
    from gen.evaluate import evaluate_interpolation
    from metrics.video_judge import VideoJudge

    video_judge = VideoJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-video")
    blend = evaluate_interpolation(Between(32), video_judge, n=8, frames=16, fps=8.0, seed=5)
    assert blend["psnr_gain_db"] == pytest.approx(0, abs=1e-9)  # the blend itself: no gain
    assert blend["model"] == pytest.approx(blend["linear_blend"], rel=1e-9) and blend["given_fps"] == 4.0
    hold = evaluate_interpolation(Between(32, hold=True), video_judge, n=8, frames=16, fps=8.0, seed=5)
    assert hold["psnr_gain_db"] < 0  # repeating frames is worse than blending moving ones
    assert set(hold["judge"]) == {"interpolated", "given", "renders"}
    assert hold["judge"]["renders"]["motion"] >= 0.75
    with pytest.raises(GenError, match="even and at least 4"):
        evaluate_interpolation(Between(32), video_judge, n=2, frames=5)
