"""The text-to-image pipeline and `gen image`: files, metadata, determinism, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import models
from gen.cli import main
from gen.pipeline import Pipeline, SamplingDefaults, shipped_models
from gen.runtime import compute_precision
from samplers import NoiseSchedule


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    torch.manual_seed(0)
    enc = models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                      embed_dim=32, context_length=16))
    net = models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim)
    with torch.no_grad():  # not a trained model: random weights everywhere, so outputs vary
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe = Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=4))
    return pipe.save_pretrained(tmp_path_factory.mktemp("pipes") / "tiny")


def _gen(tmp_path, capsys, *argv):
    code = main(["image", *argv])
    captured = capsys.readouterr()
    return code, captured.out.split(), captured.err


def test_writes_a_named_png_and_never_overwrites(tmp_path, capsys, tiny_pipe, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _gen(tmp_path, capsys, "a cat in a hat", "--model", str(tiny_pipe))
    assert code == 0 and out == [str(tmp_path / "a-cat-in-a-hat.png")]
    first = (tmp_path / "a-cat-in-a-hat.png").read_bytes()
    code, out, _ = _gen(tmp_path, capsys, "a cat in a hat", "--model", str(tiny_pipe), "--seed", "3")
    assert out == [str(tmp_path / "a-cat-in-a-hat-1.png")]
    assert (tmp_path / "a-cat-in-a-hat.png").read_bytes() == first
    image = Image.open(tmp_path / "a-cat-in-a-hat-1.png")
    assert image.size == (8, 8)
    meta = json.loads(image.text["gen"])
    precision = compute_precision("auto", torch.device("cpu"))  # what "auto" is on this machine
    assert meta == {"prompt": "a cat in a hat", "seed": 3, "steps": 4, "sampler": "ddim", "cfg": 3.0,
                    "negative": "", "model": str(tiny_pipe), "dtype": "float32", "precision": precision, "size": 8}


def test_same_arguments_give_identical_files_and_from_regenerates(tmp_path, capsys, tiny_pipe):
    args = ["a red ball", "--model", str(tiny_pipe), "--seed", "11", "--steps", "3", "--cfg", "2.5",
            "--sampler", "dpm++2m", "--negative", "a blue ball"]
    _, (a,), _ = _gen(tmp_path, capsys, *args, "--out", str(tmp_path / "a.png"))
    _, (b,), _ = _gen(tmp_path, capsys, *args, "--out", str(tmp_path / "b.png"))
    assert open(a, "rb").read() == open(b, "rb").read()
    _, (c,), _ = _gen(tmp_path, capsys, "--from", a, "--out", str(tmp_path / "c.png"))
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(c)))
    _, (d,), _ = _gen(tmp_path, capsys, "--from", a, "--seed", "12", "--out", str(tmp_path / "d.png"))
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(d)))


def test_from_uses_the_stored_precision_and_float32_for_pngs_that_predate_it(tmp_path, capsys, tiny_pipe):
    from gen.video_io import write_png

    args = ["a red ball", "--model", str(tiny_pipe), "--seed", "5", "--steps", "3"]
    _, (fp32,), _ = _gen(tmp_path, capsys, *args, "--precision", "fp32", "--out", str(tmp_path / "fp32.png"))
    _, (bf16,), _ = _gen(tmp_path, capsys, *args, "--precision", "bf16", "--out", str(tmp_path / "bf16.png"))
    pixels = {p: np.asarray(Image.open(p)) for p in (fp32, bf16)}
    assert not np.array_equal(pixels[fp32], pixels[bf16])  # the two precisions draw (slightly) different images
    _, (again,), _ = _gen(tmp_path, capsys, "--from", bf16, "--out", str(tmp_path / "again.png"))
    assert json.loads(Image.open(again).text["gen"])["precision"] == "bf16"
    assert np.array_equal(np.asarray(Image.open(again)), pixels[bf16])
    meta = json.loads(Image.open(fp32).text["gen"])
    del meta["precision"]  # as gen wrote PNGs before it sampled in bf16
    old = write_png(tmp_path / "old.png", pixels[fp32], {"gen": json.dumps(meta)})
    _, (redo,), _ = _gen(tmp_path, capsys, "--from", str(old), "--out", str(tmp_path / "redo.png"))
    assert np.array_equal(np.asarray(Image.open(redo)), pixels[fp32])


def test_several_images_and_a_grid(tmp_path, capsys, tiny_pipe):
    code, out, _ = _gen(tmp_path, capsys, "two stars", "--model", str(tiny_pipe), "--n", "3", "--grid",
                        "--out", str(tmp_path))
    assert code == 0 and [p.rsplit("/", 1)[1] for p in out] == [
        "two-stars.png", "two-stars-1.png", "two-stars-2.png", "two-stars-grid.png"]
    imgs = [np.asarray(Image.open(p)) for p in out[:3]]
    assert Image.open(out[3]).size == (16, 16)  # 2 x 2 tiles, one empty
    assert not np.array_equal(imgs[0], imgs[1])
    # Image k uses seed + k: the second image equals a single run at seed 1.
    _, (single,), _ = _gen(tmp_path, capsys, "two stars", "--model", str(tiny_pipe), "--seed", "1",
                           "--out", str(tmp_path / "single.png"))
    assert np.array_equal(np.asarray(Image.open(single)), imgs[1])


def test_empty_prompt_is_unconditional_and_said_so(tmp_path, capsys, tiny_pipe):
    code, out, err = _gen(tmp_path, capsys, "", "--model", str(tiny_pipe), "--out", str(tmp_path))
    assert code == 0 and out[0].endswith("unconditional.png") and "unconditional" in err


def test_long_prompts_are_truncated_with_a_warning(tmp_path, capsys, tiny_pipe):
    code, out, err = _gen(tmp_path, capsys, " ".join(["a red cat"] * 20), "--model", str(tiny_pipe),
                          "--out", str(tmp_path / "long.png"))
    assert code == 0 and "truncated" in err


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be between 1 and 1000"),
    (["--steps", "1001"], "--steps must be between 1 and 1000"),
    (["--cfg", "-1"], "--cfg must be between 0 and 50"),
    (["--n", "0"], "--n must be between 1 and 64"),
    (["--sampler", "euler-x"], "--sampler must be one of"),
    (["--out", "missing/dir/x.png"], "does not exist"),
    (["--out", "x.jpg"], "must be a .png file"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, capsys, tiny_pipe, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = _gen(tmp_path, capsys, "a cat", "--model", str(tiny_pipe), *argv)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.png"))


def test_unknown_model_lists_the_shipped_ones(tmp_path, capsys):
    code, _, err = _gen(tmp_path, capsys, "a cat", "--model", "no-such-model")
    assert code == 2 and "unknown model 'no-such-model'" in err and "default" in err


def test_a_model_folder_missing_a_file_names_it(tmp_path, capsys, tiny_pipe):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipe, broken)
    (broken / "denoiser" / "model.safetensors").unlink()
    code, _, err = _gen(tmp_path, capsys, "a cat", "--model", str(broken), "--out", str(tmp_path))
    assert code == 2 and "denoiser/model.safetensors" in err
    (broken / "denoiser" / "model.safetensors").write_bytes(b"not weights")
    code, _, err = _gen(tmp_path, capsys, "a cat", "--model", str(broken), "--out", str(tmp_path))
    assert code == 2 and "cannot load" in err
    assert not list(tmp_path.glob("*.png"))


def test_the_shipped_default_runs_from_python_and_the_cli(tmp_path, capsys):
    assert "default" in shipped_models()
    pipe = Pipeline.from_pretrained("default")  # the cascade: 32x32 base, then 4x super-resolution
    images = pipe("a cat in a hat", n=1, seed=0, steps=3)  # one image a batch, as the command draws it
    assert len(images) == 1 and images[0].size == (pipe.defaults.size,) * 2 == (128, 128)
    code, (path,), _ = _gen(tmp_path, capsys, "a cat in a hat", "--steps", "3", "--out", str(tmp_path))
    assert code == 0 and np.array_equal(np.asarray(Image.open(path)), np.asarray(images[0]))


def test_prompts_file_draws_every_prompt_as_one_prompt_would(tmp_path, capsys, tiny_pipe):
    (tmp_path / "prompts.txt").write_text("a red ball\n\n  a cat in a hat  \n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    code, written, _ = _gen(tmp_path, capsys, "--prompts", str(tmp_path / "prompts.txt"), "--model", str(tiny_pipe),
                            "--n", "2", "--seed", "5", "--out", str(out))
    assert code == 0 and [p.rsplit("/", 1)[1] for p in written] == [
        "a-red-ball.png", "a-red-ball-1.png", "a-cat-in-a-hat.png", "a-cat-in-a-hat-1.png"]
    for name, prompt, seed in (("a-red-ball-1.png", "a red ball", 6), ("a-cat-in-a-hat.png", "a cat in a hat", 5)):
        meta = json.loads(Image.open(out / name).text["gen"])
        assert meta["prompt"] == prompt and meta["seed"] == seed
    _, (alone, _), _ = _gen(tmp_path, capsys, "a cat in a hat", "--model", str(tiny_pipe), "--seed", "5", "--n", "2",
                          "--out", str(tmp_path / "alone.png"))
    assert np.array_equal(np.asarray(Image.open(alone)), np.asarray(Image.open(out / "a-cat-in-a-hat.png")))


@pytest.mark.parametrize("argv, message", [
    (["a cat", "--prompts", "prompts.txt"], "not more than one"),
    (["--prompts", "prompts.txt", "--out", "x.png"], "--out must be an existing folder"),
    (["--prompts", "missing.txt"], "--prompts missing.txt does not exist"),
    (["--prompts", "empty.txt"], "holds no prompts"),
])
def test_prompts_file_bad_input(tmp_path, capsys, tiny_pipe, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("a red ball\n")
    (tmp_path / "empty.txt").write_text("\n \n")
    code, _, err = _gen(tmp_path, capsys, *argv, "--model", str(tiny_pipe))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "prompts.txt"]
