"""The toy-world video judge: shapes for any clip length and size, exact checkpoints, the
caption parser against the toy world's own attributes, label-exact augmentation, and
`judge_clips` arithmetic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gen.toyworld import COLORS, MOTIONS, OBJECTS, toy_clip
from metrics.video_judge import VideoJudge, judge_clips, parse_motion_caption

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_video_judge", ROOT / "scripts" / "train_video_judge.py")
train_video_judge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_video_judge)
WORDS = train_video_judge.motion_word_table()
COLS = tuple(COLORS)


def _tiny(**overrides) -> VideoJudge:
    config = {"classes": list(OBJECTS), "colors": list(COLS), "motions": list(MOTIONS), "motion_words": WORDS,
              "channels": [8, 16], "convs_per_stage": 1, "frame_dim": 16, "temporal_layers": 2}
    return VideoJudge.from_config({**config, **overrides})


@pytest.mark.parametrize("shape", [(2, 3, 2, 32, 32), (3, 3, 8, 40, 24), (1, 3, 16, 64, 64), (2, 3, 5, 16, 16)])
def test_shapes_for_any_length_and_size(shape):
    torch.manual_seed(0)
    judge = _tiny().eval()
    clips = torch.rand(shape) * 2 - 1
    out = judge(clips)
    b = shape[0]
    assert {k: tuple(v.shape) for k, v in out.items()} == {"cls": (b, 12), "color": (b, 11), "motion": (b, 8)}
    assert judge.features(clips).shape == (b, judge.feature_dim) == (b, 16 + 16)
    rows = judge.predict(clips)
    assert len(rows) == b and all(r["class"] in OBJECTS and r["motion"] in MOTIONS for r in rows)


def test_frames_are_judged_in_order():
    """Motion must depend on frame order (reversing time changes the logits) while the
    time-mean appearance features do not; a clip of identical frames gives equal
    temporal features at every frame count."""
    torch.manual_seed(0)
    judge = _tiny().eval()
    clips = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    forward, backward = judge(clips)["motion"], judge(clips.flip(2))["motion"]
    assert not torch.allclose(forward, backward, atol=1e-4)
    look = judge.features(clips)[:, judge.config.frame_dim:]
    assert torch.allclose(look, judge.features(clips.flip(2))[:, judge.config.frame_dim:], atol=1e-5)
    still = clips[:, :, :1]
    assert torch.allclose(judge.features(still.expand(-1, -1, 4, -1, -1)),
                          judge.features(still.expand(-1, -1, 12, -1, -1)), atol=1e-5)


def test_bad_inputs_are_refused():
    judge = _tiny()
    with pytest.raises(ValueError, match="at least 2 frames"):
        judge(torch.zeros(1, 3, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        judge(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        judge(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="motion"):
        _tiny(motions=[])
    with pytest.raises(ValueError, match="'sideways'"):
        _tiny(motion_words={"wobbling": "sideways"})


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    judge = _tiny()
    judge.train()
    judge(torch.rand(4, 3, 6, 32, 32) * 2 - 1)  # move BatchNorm running statistics off their init
    judge.eval()
    judge.save_pretrained(tmp_path / "j")
    config = json.loads((tmp_path / "j" / "config.json").read_text())
    assert config["motions"] == list(MOTIONS) and config["motion_words"] == WORDS
    loaded = VideoJudge.from_pretrained(tmp_path / "j").eval()
    assert loaded.config == judge.config and loaded.motions == tuple(MOTIONS)
    a, b = judge.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.rand(2, 3, 8, 40, 24) * 2 - 1
    for head, out in judge(x).items():
        assert torch.equal(out, loaded(x)[head]), head
    assert torch.equal(judge.features(x), loaded.features(x))


def test_motion_words_cover_the_grammar():
    """The phrase table holds every phrase of every motion, each meaning its own kind."""
    from gen.toyworld.captions import motion_phrases

    for kind in MOTIONS:
        for name in OBJECTS:
            for phrase in motion_phrases(kind, name):
                assert WORDS[phrase] == kind, phrase
    assert WORDS["bouncing up and down"] == "bouncing" and WORDS["rolling to the left"] == "left"


def test_caption_parser_matches_attributes():
    """300 clip captions of a fresh seed parse to their clip's attributes: class and
    motion always, colour exactly when the caption names one."""
    kinds, named = set(), 0
    for i in range(300):
        clip = toy_clip(i, size=8, frames=2, fps=1.0, seed=4242)
        obj, motion = clip.attributes["objects"][0], clip.attributes["motion"]["kind"]
        got = parse_motion_caption(clip.caption, OBJECTS, COLS, WORDS)
        assert got["class"] == obj["class"] and got["motion"] == motion, clip.caption
        says_colour = any(w in COLS for w in clip.caption.split())
        assert got["color"] == (obj["color"] if says_colour else None), clip.caption
        kinds.add(motion)
        named += says_colour
    assert kinds == set(MOTIONS) and 150 < named < 300  # every motion, both colour cases


@pytest.mark.parametrize("caption, expected", [
    ("a red ball rolling left", ("ball", "red", "left")),
    ("a clip of an orange house getting smaller", ("house", "orange", "shrinking")),
    ("a big flower hopping", ("flower", None, "bouncing")),
    ("a blue star rotating", ("star", "blue", "spinning")),
    ("A video of a small green bird flying up.", ("bird", "green", "up")),
    ("a cat bouncing up and down", ("cat", None, "bouncing")),
])
def test_caption_parser_examples(caption, expected):
    got = parse_motion_caption(caption, OBJECTS, COLS, WORDS)
    assert (got["class"], got["color"], got["motion"]) == expected


@pytest.mark.parametrize("caption", ["a red cat in a blue hat", "a dog dancing", "a picture of nothing",
                                     "a red ball"])
def test_caption_parser_refuses_other_captions(caption):
    with pytest.raises(ValueError, match="caption"):
        parse_motion_caption(caption, OBJECTS, COLS, WORDS)


def test_eight_frames_at_4fps_are_every_other_frame_at_8fps():
    """The training script renders 16 frames at 8 fps and takes every other one for the
    8-frame, 4 fps setting: that must be the toy world's own 4 fps render, bit for bit."""
    pixels, labels = train_video_judge.render_clips([3, 11], 32, seed=9)
    for j, i in enumerate((3, 11)):
        slow = toy_clip(i, size=32, frames=8, fps=4.0, seed=9)
        assert np.array_equal(pixels[j, ::2], slow.pixels)
        assert MOTIONS[labels[j, 2]] == slow.attributes["motion"]["kind"]
        assert OBJECTS[labels[j, 0]] == slow.attributes["objects"][0]["class"]
    clips = train_video_judge.to_clips(torch.from_numpy(pixels), 8)
    assert clips.shape == (2, 3, 8, 32, 32)
    assert torch.equal(clips[1].permute(1, 2, 3, 0), torch.from_numpy(pixels[1, ::2]).float() / 127.5 - 1)


def _plain(x, motion, g, **kw):
    """Only the geometric part of the augmentation (no shift, blur, jitter, noise)."""
    return train_video_judge.augment(x, motion, g, shift=0, blur_p=0.0, noise=0.0, jitter=0.0, **kw)


def test_flip_swaps_left_and_right():
    m = torch.arange(len(MOTIONS))
    x = torch.rand(len(MOTIONS), 3, 4, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    flipped, fm = _plain(x, m, g, flip_p=1.0, reverse_p=0.0)
    assert torch.equal(flipped, x.flip(-1))
    swap = {"left": "right", "right": "left"}
    assert [MOTIONS[k] for k in fm] == [swap.get(k, k) for k in MOTIONS]
    same, sm = _plain(x, m, g, flip_p=0.0, reverse_p=0.0)
    assert torch.equal(same, x) and torch.equal(sm, m)
    # Random flips: each clip is flipped exactly when its label was swapped.
    x, m = torch.rand(64, 3, 3, 8, 8), torch.full((64,), MOTIONS.index("left"))
    out, om = _plain(x, m, g, flip_p=0.5, reverse_p=0.0)
    was_flipped = torch.tensor([torch.equal(o, c.flip(-1)) for o, c in zip(out, x)])
    assert 10 < int(was_flipped.sum()) < 54
    assert torch.equal(om == MOTIONS.index("right"), was_flipped)


def test_time_reversal_swaps_directions_and_growth():
    m = torch.arange(len(MOTIONS))
    x = torch.rand(len(MOTIONS), 3, 5, 8, 8)
    out, om = _plain(x, m, torch.Generator().manual_seed(0), flip_p=0.0, reverse_p=1.0)
    assert torch.equal(out, x.flip(2))
    back = {"left": "right", "right": "left", "up": "down", "down": "up", "growing": "shrinking",
            "shrinking": "growing"}
    assert [MOTIONS[k] for k in om] == [back.get(k, k) for k in MOTIONS]


def test_full_augmentation_keeps_range_and_shape():
    x = torch.rand(16, 3, 8, 32, 32) * 2 - 1
    m = torch.randint(0, len(MOTIONS), (16,))
    out, om = train_video_judge.augment(x, m, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.equal(out, x) and om.shape == m.shape


def test_shift_moves_every_frame_alike():
    """A clip of one bright pixel: after a pure shift every frame has it at the same place,
    at most 2 px from where it was."""
    x = -torch.ones(8, 3, 4, 16, 16)
    x[..., 8, 7] = 1
    out, _ = train_video_judge.augment(x, torch.zeros(8, dtype=torch.long), torch.Generator().manual_seed(3),
                                       flip_p=0.0, reverse_p=0.0, blur_p=0.0, noise=0.0, jitter=0.0)
    moved = False
    for clip in out:
        spots = [tuple((clip[0, t] == 1).nonzero()[0].tolist()) for t in range(4)]
        assert len(set(spots)) == 1
        dy, dx = spots[0][0] - 8, spots[0][1] - 7
        assert abs(dy) <= 2 and abs(dx) <= 2
        moved |= (dy, dx) != (0, 0)
    assert moved


class _Scripted(VideoJudge):
    """A judge whose logits are written into the clips' pixels: its output is known."""

    def forward(self, clips):
        flat = clips.reshape(clips.shape[0], -1)
        nc, nk, nm = len(self.classes), len(self.colors), len(self.motions)
        return {"cls": flat[:, :nc], "color": flat[:, nc:nc + nk], "motion": flat[:, nc + nk:nc + nk + nm]}


def _scripted_clip(judge, cls, color, motion):
    logits = torch.zeros(3 * 2 * 8 * 8)
    nc, nk = len(judge.classes), len(judge.colors)
    logits[judge.classes.index(cls)] = 1
    logits[nc + judge.colors.index(color)] = 1
    logits[nc + nk + judge.motions.index(motion)] = 1
    return logits.view(3, 2, 8, 8)


def test_judge_clips_arithmetic():
    judge = _Scripted.from_config({"classes": ["cat", "dog"], "colors": ["red", "blue", "green"],
                                   "motions": ["left", "right", "spinning"], "channels": [4]})
    seen = [("cat", "red", "left"), ("dog", "blue", "spinning"), ("cat", "green", "right"), ("dog", "red", "left")]
    clips = torch.stack([_scripted_clip(judge, *s) for s in seen])
    assert [p["motion"] for p in judge.predict(clips)] == ["left", "spinning", "right", "left"]
    targets = [
        {"class": "cat", "color": "red", "motion": "left"},  # all right
        {"class": "dog", "color": None, "motion": "right"},  # motion wrong; colour not asked
        {"class": "dog", "color": "green"},  # class wrong; motion not asked
        {"class": "dog", "color": "blue", "motion": "left"},  # colour wrong
    ]
    r = judge_clips(judge, clips, targets)
    assert r["n"] == {"object": 4, "color": 3, "motion": 3, "all": 4}
    assert r["object"] == pytest.approx(3 / 4)
    assert r["color"] == pytest.approx(2 / 3)
    assert r["motion"] == pytest.approx(2 / 3)
    assert r["all"] == pytest.approx(1 / 4)
    assert [row["correct"]["all"] for row in r["per_clip"]] == [True, False, False, False]
    assert r["per_clip"][1]["correct"]["color"] is None and r["per_clip"][2]["correct"]["motion"] is None
    assert r["per_clip"][2]["prediction"]["class"] == "cat"
    none = judge_clips(judge, clips[:1], [{"class": None}])
    assert none["object"] is None and none["n"]["object"] == 0 and none["all"] == 1.0
    with pytest.raises(ValueError, match="one target per clip"):
        judge_clips(judge, clips, targets[:3])
    with pytest.raises(ValueError, match="'up'"):
        judge_clips(judge, clips[:1], [{"class": "cat", "motion": "up"}])


@pytest.mark.parametrize("frames, fps", [(16, 8.0), (8, 4.0)])
def test_the_shipped_video_judge_reads_fresh_clips(frames, fps):
    from gen.pipeline import WEIGHTS_DIR

    judge = VideoJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-video")
    cfg = judge.config
    assert judge.classes == tuple(OBJECTS) and judge.motions == tuple(MOTIONS)
    samples = [toy_clip(i, size=32, frames=frames, fps=fps, seed=20261128) for i in range(160)]
    clips = torch.from_numpy(np.stack([s.pixels for s in samples])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    targets = [parse_motion_caption(s.caption, cfg.classes, cfg.colors, cfg.motion_words) for s in samples]
    for s, t in zip(samples, targets):  # the captions' own targets are the clips' attributes
        assert t["class"] == s.attributes["objects"][0]["class"] and t["motion"] == s.attributes["motion"]["kind"]
    truth = [{"class": s.attributes["objects"][0]["class"], "color": s.attributes["objects"][0]["color"],
              "motion": s.attributes["motion"]["kind"]} for s in samples]
    report = judge_clips(judge, clips, truth)
    assert min(report[k] for k in ("object", "color", "motion")) >= 0.98, report
