"""What bad input alone cannot show: one writer per output (locks), resumed runs that keep
their config and their log straight, run folders a failed start leaves reusable, limits
derived from the model, local names that never reach the network, and file names as given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import models
from gen.cli import main
from gen.errors import GenError
from gen.lock import LOCK_NAME, lock_path, output_lock
from gen.pipeline import Pipeline, SamplingDefaults
from gen.train import TrainConfig, train
from samplers import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = {"arch": "tiny", "hash_vocab": 512, "width": 32, "layers": 1, "heads": 2, "embed_dim": 32}
RECIPE = dict(size=8, batch=2, data_n=4, steps=4, warmup=1, bf16=False, text_encoder=TEXT, log_every=1,
              sample_every=0, ckpt_every=2, seed=0)


def _log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- locks


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has it (until the kernel reuses it)


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as held:
        assert held == out / LOCK_NAME and held.is_file()
        with pytest.raises(GenError, match=rf"in use by another gen command \(pid {os.getpid()}"):
            with output_lock(out):
                pass
    assert not (out / LOCK_NAME).exists()  # released
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": "then"}))
    with output_lock(out):  # its owner died (kill -9): taken over
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert lock_path(tmp_path / "stats.npz", beside=True) == tmp_path / f".stats.npz{LOCK_NAME}"


@pytest.mark.parametrize("argv", [
    ["data", "toy", "--n", "2", "--size", "8", "--out", "{out}"],
    ["train", "image", "--size", "8", "--steps", "1", "--batch", "2", "--n", "2", "--out", "{out}"],
    ["eval", "image", "--n", "2", "--out", "{out}"],
    ["score", "stats", "{ds}", "--out", "{out}.npz"],
], ids=["data", "train", "eval", "score-stats"])
def test_every_writing_command_refuses_an_output_in_use(tmp_path, capsys, argv):
    ds = tmp_path / "ds"
    assert main(["data", "toy", "--n", "2", "--size", "16", "--out", str(ds)]) == 0
    out = tmp_path / "out"
    target = Path(str(out) + ".npz") if argv[0] == "score" else out
    beside = argv[0] in ("score", "eval")
    argv = [a.format(out=out, ds=ds) for a in argv]
    with output_lock(target, beside=beside):  # another command, still running, holds it
        before = sorted(p.name for p in tmp_path.rglob("*"))
        assert main([*argv, "--device", "cpu"]) == 2
        assert "is in use by another gen command" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_two_gen_data_started_together_one_wins(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "gen", "data", "toy", "--n", "64", "--size", "32", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.strip().startswith("gen: error:") and ("in use" in loser or "not empty" in loser), loser
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 64
    assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
    """A run stopped after step 3 (its log says 3 steps) whose last checkpoint is step 2: a kill -9."""
    run = tmp_path_factory.mktemp("resume") / "run"
    train(TrainConfig.from_dict({**RECIPE, "out": str(run), "steps": 3, "ckpt_every": 2}), device="cpu",
          progress=False)
    # the final save at step 3 stands for the checkpoint the crash never wrote: drop it
    import shutil

    shutil.rmtree(run / "checkpoints" / "step-0000003")
    (run / "checkpoints" / "latest").write_text("step-0000002\n")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1.0}\n{"step": 5, "lo')  # what a kill -9 can leave
    return run


def test_resume_truncates_the_log_to_the_checkpoint_and_applies_steps(crashed_run, capsys):
    lines = (crashed_run / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[:4]] == [1, 2, 3, 4] and len(lines) == 5
    code = main(["train", "image", "--out", str(crashed_run), "--resume", "--steps", "5", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert _log_steps(crashed_run) == [1, 2, 3, 4, 5]  # 3 trained again, logged once
    assert json.loads((crashed_run / "config.json").read_text())["steps"] == 5
    assert (crashed_run / "checkpoints" / "latest").read_text().strip() == "step-0000005"


def test_resume_refuses_flags_that_change_the_run_and_names_them(crashed_run, capsys):
    before = (crashed_run / "log.jsonl").read_bytes()
    for flag, value in (("--lr", "0.5"), ("--batch", "4"), ("--weighting", "uniform"), ("--seed", "3")):
        assert main(["train", "image", "--out", str(crashed_run), "--resume", flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag} " in err and "the run has" in err, err
    assert (crashed_run / "log.jsonl").read_bytes() == before
    # a value equal to the run's is no change
    same = ["--lr", str(TrainConfig.from_dict(RECIPE).lr), "--batch", "2", "--steps", "5"]
    assert main(["train", "image", "--out", str(crashed_run), "--resume", *same, "--device", "cpu"]) == 0


# ---------------------------------------------------------------------------- failed starts


def _failing_model(monkeypatch):
    from gen.train import loop

    def fail(self, *args):
        if not loop.measuring:
            raise RuntimeError("boom in the first step")
        return original(self, *args)

    original = loop.TextToImageModel.forward
    monkeypatch.setattr(loop.TextToImageModel, "forward", fail)


def test_a_run_that_fails_at_start_leaves_nothing_or_a_reusable_folder(tmp_path, monkeypatch):
    cfg = {**RECIPE, "steps": 1, "ckpt_every": 0}
    fresh = tmp_path / "fresh"
    _failing_model(monkeypatch)
    with pytest.raises(RuntimeError, match="boom"):
        train(TrainConfig.from_dict({**cfg, "out": str(fresh)}), device="cpu", progress=False)
    assert not fresh.exists()  # it made the folder, and takes it away again
    mine = tmp_path / "mine"
    mine.mkdir()  # the user's empty folder: kept, with what the failed start wrote
    with pytest.raises(RuntimeError, match="boom"):
        train(TrainConfig.from_dict({**cfg, "out": str(mine)}), device="cpu", progress=False)
    from gen.train.loop import failed_start

    assert mine.is_dir() and failed_start(mine)  # only what a start writes: config.json, an empty log
    monkeypatch.undo()
    train(TrainConfig.from_dict({**cfg, "out": str(mine)}), device="cpu", progress=False)  # reused, no --resume
    assert _log_steps(mine) == [1]
    with pytest.raises(GenError, match="exists and is not empty"):  # now it holds a run
        train(TrainConfig.from_dict({**cfg, "out": str(mine)}), device="cpu", progress=False)


# ---------------------------------------------------------------------------- defaults and limits


def test_the_video_vae_trains_with_its_default_frame_count(tmp_path):
    run = tmp_path / "vae"
    cfg = TrainConfig.from_dict({"kind": "vae", "vae_video": True, "out": str(run), "size": 8, "steps": 1,
                                 "batch": 1, "data_n": 1, "bf16": False, "sample_every": 0, "lpips_weight": 0.0})
    assert cfg.frames == 17  # 1 + k * 2: what a causal video VAE takes
    train(cfg, device="cpu", progress=False)
    assert (run / "checkpoints" / "latest").is_file()


def test_the_memory_estimate_grows_with_the_batch_and_refuses_what_cannot_fit(tmp_path, monkeypatch):
    from gen.train import loop

    monkeypatch.setattr(loop, "_available_memory", lambda device: 2**30)  # 1 GiB free
    cfg = TrainConfig.from_dict({**RECIPE, "size": 32, "batch": 20_000, "out": str(tmp_path / "run")})
    with pytest.raises(GenError, match=r"--batch 20000 needs about .* GiB .* but 1.0 GiB is free; use --batch \d+"):
        train(cfg, device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory):
    torch.manual_seed(0)
    enc = models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                      embed_dim=32, context_length=16))
    net = models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim)
    pipe = Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=2))
    return pipe.save_pretrained(tmp_path_factory.mktemp("pipes") / "tiny")


def test_generation_size_is_bounded_by_the_trained_size(tiny_image):
    pipe = Pipeline.from_pretrained(str(tiny_image))
    assert pipe.generate(["x"], [0], size=32).shape[-1] == 32  # 4x the trained 8 is allowed
    with pytest.raises(GenError, match=r"--size must be between 1 and 32 \(4x the 8 pixels"):
        pipe.generate(["x"], [0], size=40)


def test_a_cond_of_the_wrong_width_names_the_key_and_both_widths():
    net = models.create("dit-tiny", sample_size=8, text_dim=16, pooled_dim=64)
    cond = {"text": torch.randn(1, 4, 16), "text_mask": torch.ones(1, 4, dtype=torch.bool),
            "pooled": torch.randn(1, 32)}
    with pytest.raises(ValueError, match=r"cond\['pooled'\] with 64 features .* shape \(1, 32\)"):
        net(torch.randn(1, 3, 8, 8), torch.zeros(1, dtype=torch.long), cond)
    cond["pooled"], cond["text"] = torch.randn(1, 64), torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match=r"cond\['text'\] with 16 features"):
        net(torch.randn(1, 3, 8, 8), torch.zeros(1, dtype=torch.long), cond)


# ---------------------------------------------------------------------------- network and names


def test_local_looking_names_and_pngs_never_reach_the_hub(tiny_image, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, *args, local_files_only=False, **kwargs):
        calls.append((repo_id, local_files_only))
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    assert main(["image", "x", "--model", "runs/typo"]) == 2
    assert "no such folder here" in capsys.readouterr().err
    png = tmp_path / "made.png"
    assert main(["image", "x", "--model", str(tiny_image), "--out", str(png), "--device", "cpu"]) == 0
    capsys.readouterr()
    meta = json.loads(Image.open(png).text["gen"])
    from gen.video_io import write_png
    import numpy as np

    hostile = write_png(tmp_path / "hostile.png", np.zeros((4, 4, 3), np.uint8),
                        {"gen": json.dumps({**meta, "model": "attacker/repo"})})
    assert main(["image", "--from", str(hostile)]) == 2
    assert "names the model 'attacker/repo', which is not on this machine; pass --download" in capsys.readouterr().err
    assert all(local for _, local in calls), calls  # looked up in the cache at most, never fetched
    # naming the model yourself overrides the file's, and gen says which model it loads
    assert main(["image", "--from", str(png), "--out", str(tmp_path / "again.png"), "--device", "cpu"]) == 0
    assert f"model {tiny_image}" in capsys.readouterr().err
    assert (tmp_path / "again.png").read_bytes() == png.read_bytes() or \
        np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(Image.open(png)))


def test_out_keeps_its_spelling_and_emoji_prompts_get_their_own_name(tiny_image, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["image", "x", "--model", str(tiny_image), "--out", str(tmp_path / "x.PNG"), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "x.PNG")]
    assert main(["image", "🐱🎩", "--model", str(tiny_image), "--device", "cpu"]) == 0
    (name,) = capsys.readouterr().out.split()
    assert Path(name).name.startswith("prompt-") and Path(name).name != "unconditional.png"
    assert main(["image", "", "--model", str(tiny_image), "--device", "cpu"]) == 0
    assert Path(capsys.readouterr().out.split()[0]).name == "unconditional.png"


def test_faults_of_the_environment_become_one_line_and_bugs_keep_their_traceback():
    import errno

    from gen.errors import user_error

    assert str(user_error(PermissionError(errno.EACCES, "Permission denied", "/data/out"))) == \
        "cannot use /data/out: Permission denied"
    assert "the disk is full" in str(user_error(OSError(errno.ENOSPC, "No space left on device", "/data/x.png")))
    assert "it is a folder" in str(user_error(IsADirectoryError(errno.EISDIR, "Is a directory", "/data")))
    missing = ModuleNotFoundError("No module named 'av'", name="av")
    assert 'pip install "gen[video]"' in str(user_error(missing))
    assert user_error(ModuleNotFoundError("No module named 'gen_internal'", name="gen_internal")) is None
    assert user_error(KeyError("a bug")) is None and user_error(OSError("no file named")) is None
