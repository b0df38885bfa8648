"""The `gen` command line: help, version, global options, `gen data`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen.cli import COMMANDS, main
from gen.errors import GenError
from gen.runtime import resolve_device, seed_everything
from gen.toyworld import toy_clip, toy_image

SUBCOMMANDS = ("image", "video", "upscale", "cascade", "export", "train", "score", "eval", "data", "models")


def test_help_lists_every_subcommand_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert [c[0] for c in COMMANDS] == list(SUBCOMMANDS)


def test_console_script_runs():
    exe = shutil.which("gen", path=os.path.dirname(sys.executable)) or shutil.which("gen")
    assert exe, "the `gen` console script is not installed"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("gen ")
    run = subprocess.run([sys.executable, "-m", "gen", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "data" in run.stdout


def test_global_options_work_before_and_after_the_subcommand(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--seed", "5", "data", "toy", "--n", "2", "--size", "16", "--out", str(a)]) == 0
    assert main(["data", "toy", "--n", "2", "--size", "16", "--out", str(b), "--seed", "5"]) == 0
    assert (a / "000001.png").read_bytes() == (b / "000001.png").read_bytes()
    first = np.asarray(Image.open(a / "000001.png"))
    assert np.array_equal(first, toy_image(1, 16, seed=5).pixels)


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(GenError, match="--device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(GenError, match="CUDA is not available"):
            resolve_device("cuda")


def test_seed_everything_makes_draws_repeat():
    g = seed_everything(3)
    a = torch.randn(4, generator=g), torch.randn(4)
    g = seed_everything(3)
    b = torch.randn(4, generator=g), torch.randn(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(GenError, match="--seed"):
        seed_everything(-1)


# --- gen data ------------------------------------------------------------------------

def _metadata(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_data_toy_writes_images_captions_and_attributes(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["data", "toy", "--n", "5", "--size", "32", "--seed", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    records = _metadata(out)
    assert [r["file_name"] for r in records] == [f"{i:06d}.png" for i in range(5)]
    for i, r in enumerate(records):
        s = toy_image(i, 32, seed=2)
        assert np.array_equal(np.asarray(Image.open(out / r["file_name"])), s.pixels)
        assert r["text"] == s.caption and r["attributes"] == json.loads(json.dumps(s.attributes))
    assert sorted(p.name for p in out.iterdir()) == sorted([r["file_name"] for r in records] +
                                                           ["metadata.jsonl", "gen-dataset.json"])


def test_data_toy_video_writes_clips_readable_by_the_video_loader(tmp_path):
    from gen.data import open_dataset

    out = tmp_path / "clips"
    assert main(["data", "toy-video", "--n", "3", "--frames", "6", "--size", "16", "--fps", "4",
                 "--out", str(out)]) == 0
    ds = open_dataset(str(out), video=True)
    assert len(ds) == 3
    item = ds[1]
    expected = toy_clip(1, 16, frames=6, fps=4.0)
    assert item["video"].shape == (3, 6, 16, 16) and item["text"] == expected.caption
    want = torch.from_numpy(expected.pixels).float().div(127.5).sub(1).permute(3, 0, 1, 2)
    assert torch.allclose(item["video"], want, atol=1e-6)  # frame folders are lossless
    assert len(_metadata(out)[1]["attributes"]["frames"]) == 6


def test_data_refuses_a_non_empty_folder_and_overwrites_only_its_own(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["data", "toy", "--n", "3", "--size", "8", "--out", str(out)]) == 0
    before = (out / "000000.png").read_bytes()
    assert main(["data", "toy", "--n", "2", "--size", "8", "--seed", "1", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "000000.png").read_bytes() == before and (out / "000002.png").exists()
    assert main(["data", "toy", "--n", "2", "--size", "8", "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert len(_metadata(out)) == 2 and not (out / "000002.png").exists()
    assert (out / "000000.png").read_bytes() != before

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["data", "toy", "--n", "2", "--out", str(mine), "--overwrite"]) == 2
    assert "not a dataset folder written by gen" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1


@pytest.mark.parametrize("argv, message", [
    (["data", "toy", "--n", "0"], "--n must be a positive integer, got 0"),
    (["data", "toy", "--size", "-4"], "--size must be a positive integer, got -4"),
    (["data", "toy-video", "--frames", "0"], "--frames must be a positive integer"),
    (["data", "toy-video", "--fps", "0"], "--fps must be positive"),
    (["data", "faces"], "unknown dataset kind 'faces'; known: toy, toy-video"),
])
def test_data_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_failure_half_way_leaves_nothing_behind(tmp_path, monkeypatch):
    import gen.toyworld as toyworld

    real = toyworld.toy_image

    def flaky(i, *args, **kwargs):
        if i == 3:
            raise KeyboardInterrupt
        return real(i, *args, **kwargs)

    monkeypatch.setattr(toyworld, "toy_image", flaky)
    out = tmp_path / "toy"
    assert main(["data", "toy", "--n", "6", "--size", "8", "--out", str(out)]) == 130
    assert not out.exists()
    existing = tmp_path / "empty"
    existing.mkdir()
    assert main(["data", "toy", "--n", "6", "--size", "8", "--out", str(existing)]) == 130
    assert existing.exists() and not any(existing.iterdir())


def test_models_lists_every_preset_with_parameters_and_flops(capsys):
    import models

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(models.PRESETS)
    tiny = next(r for r in rows if r["name"] == "dit-tiny")
    assert tiny["parameters"] == models.create("dit-tiny").num_parameters()
    # One linear layer's FLOPs are 2 * in * out per token: the count must exceed the
    # final layer's alone (64 tokens of 16x16 / 2x2 patches).
    assert tiny["gflops"] * 1e9 > 2 * 64 * 64 * 12
    assert main(["models"]) == 0
    assert "dit-tiny" in capsys.readouterr().out


def test_every_command_starts_with_glibc_keeping_freed_memory(monkeypatch, capsys):
    """Sampling, like a training step, frees and reallocates the same activations: every
    command sets glibc to keep them (gen.runtime.keep_freed_memory) before it runs."""
    calls = []
    monkeypatch.setattr("gen.runtime.keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["models"]) == 0
    assert calls == [1]
    assert main(["image", "a cat", "--steps", "0"]) == 2  # refused inside the command: still set first
    assert calls == [1, 1]
