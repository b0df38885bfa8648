"""The training loop: exact resume, atomic checkpoints, NaN and Ctrl-C handling, DDP, the
`gen train` command line, and that a tiny model actually learns.

Runs are tiny (dit-tiny at 8x8, a 1-layer 32-wide text tower with a 512-row token table,
batch 4, a few steps) and in float32 where runs are compared bit for bit. The reference is
always an independent run that was never stopped, never a value pasted back.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import gen.train.loop as loop
from gen.cli import main
from gen.errors import GenError
from gen.train import TrainConfig, train
from gen.train.ema import EMA

TEXT = {"arch": "tiny", "hash_vocab": 512, "width": 32, "layers": 1, "heads": 2, "embed_dim": 32}
# The shared recipe: warm-up runs past the stop points, so the LR schedule must be restored
# too; 12 samples at batch 4 cross an epoch boundary (a fresh permutation) at step 3.
RECIPE = dict(size=8, batch=4, data_n=12, steps=6, warmup=5, lr=2e-3, ema_decay=0.9, bf16=False,
              text_encoder=TEXT, log_every=1, sample_every=0, ckpt_every=1, keep_checkpoints=10, seed=0)
STEPS = 6


pytestmark = pytest.mark.usefixtures("one_thread")


def config(out: Path, **changes) -> TrainConfig:
    return TrainConfig.from_dict({**RECIPE, "out": str(out), **changes})


def run_train(cfg: TrainConfig, resume: bool = False) -> Path:
    return train(cfg, resume=resume, device="cpu", progress=False)


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:07d}"


def latest(run: Path) -> str:
    return (run / "checkpoints" / "latest").read_text().strip()


def state(path: Path) -> dict:
    """Everything a checkpoint restores (its saved config aside)."""
    meta = json.loads((path / "state.json").read_text())
    return {"model": load_file(path / "model.safetensors"), "ema": load_file(path / "ema.safetensors"),
            "optimizer": torch.load(path / "optimizer.pt", weights_only=True), "step": meta["step"],
            "ema_updates": meta["ema_updates"], "lr_scheduler": meta["lr_scheduler"]}


def assert_identical(a, b, where: str = "checkpoint") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs (max |diff| {(a.double() - b.double()).abs().max():.3g})"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a, key=str) == sorted(b, key=str), f"{where}: keys differ"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def all_finite(path: Path) -> bool:
    return all(torch.isfinite(v).all() for f in ("model", "ema") for v in load_file(path / f"{f}.safetensors").values())


def log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def patch_forward(monkeypatch, at_call: int, action) -> None:
    """Make the trained model's forward do `action(output)` on its `at_call`-th call (1-based):
    the forward of optimiser step `at_call`."""
    original, calls = loop.TextToImageModel.forward, [0]

    def forward(self, *args):
        if loop.measuring:  # the memory check's forward before step 1, not a step's
            return original(self, *args)
        calls[0] += 1
        out = original(self, *args)
        return action(out) if calls[0] == at_call else out

    monkeypatch.setattr(loop.TextToImageModel, "forward", forward)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run of the recipe, with a checkpoint at every step."""
    run = tmp_path_factory.mktemp("reference") / "run"
    run_train(config(run))
    assert [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == [
        f"step-{s:07d}" for s in range(1, STEPS + 1)]
    return run


# ---------------------------------------------------------------------------- 1. exact resume


def test_resume_is_bit_exact(reference, tmp_path):
    run = tmp_path / "run"
    run_train(config(run, steps=4, ckpt_every=2))
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000004"]
    # Checkpoints the uninterrupted run wrote mid-run equal the stopped run's at the same step.
    for step in (2, 4):
        assert_identical(state(ckpt(run, step)), state(ckpt(reference, step)), f"step {step}")

    run_train(config(run, steps=STEPS), resume=True)
    assert latest(run) == f"step-{STEPS:07d}"
    assert_identical(state(ckpt(run, STEPS)), state(ckpt(reference, STEPS)), "final")
    exported = [load_file(r / "pipeline" / "denoiser" / "model.safetensors") for r in (run, reference)]
    assert_identical(exported[0], exported[1], "exported EMA denoiser")
    # The resumed run appended its steps to the log, with the losses of the unstopped run.
    assert [r["step"] for r in log(run)] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in log(run)] == [r["loss"] for r in log(reference)]


def test_a_run_with_another_seed_does_not_match(reference, tmp_path):
    # Sanity of the comparison above: a run that differs in one seed does not match.
    run = tmp_path / "run"
    run_train(config(run, steps=2, seed=1, ckpt_every=0))
    assert not torch.equal(load_file(ckpt(run, 2) / "model.safetensors")["denoiser.final.linear.weight"],
                           load_file(ckpt(reference, 2) / "model.safetensors")["denoiser.final.linear.weight"])


# ------------------------------------------------------------- 2. atomic checkpoints, `latest`


def test_partial_checkpoint_left_by_a_crash_does_not_break_resume(reference, tmp_path):
    run = tmp_path / "run"
    run_train(config(run, steps=4, ckpt_every=1, keep_checkpoints=2))
    root = run / "checkpoints"
    # keep_checkpoints prunes all but the newest two; `latest` names the newest.
    assert sorted(p.name for p in root.glob("step-*")) == ["step-0000003", "step-0000004"]
    assert latest(run) == "step-0000004"
    # A crash while writing step 5: a half-written folder and pointer that never got renamed.
    partial = root / ".step-0000005.partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00 torn")
    (root / ".latest.partial").write_text("step-0000005\n")

    run_train(config(run, steps=STEPS), resume=True)
    assert latest(run) == f"step-{STEPS:07d}"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000005", "step-0000006"]
    assert_identical(state(ckpt(run, STEPS)), state(ckpt(reference, STEPS)), "final")


def test_new_run_refuses_a_non_empty_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(GenError, match=r"not empty.*--resume"):
        run_train(config(run))
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    assert main(["train", "image", "--out", str(run), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gen: error: ") and "--resume" in err and err.count("\n") == 1
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    for run in (tmp_path / "missing", tmp_path):
        with pytest.raises(GenError, match="no checkpoint"):
            run_train(config(run), resume=True)
    assert main(["train", "image", "--out", str(tmp_path / "missing"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


# ----------------------------------------------------------------------------------- 3. NaN


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_state(reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    patch_forward(monkeypatch, 4, lambda out: out * float("nan"))
    with pytest.raises(GenError, match=r"at step 4\b") as err:
        run_train(config(run, ckpt_every=0))
    assert "nan" in str(err.value).lower()
    assert latest(run) == "step-0000003" and not ckpt(run, 4).exists()
    assert all_finite(ckpt(run, 3))
    assert_identical(state(ckpt(run, 3)), state(ckpt(reference, 3)), "last good state")


class _InfiniteGradient(torch.autograd.Function):
    """Identity forward, infinite backward: a finite loss whose gradient overflows."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_non_finite_gradient_stops_before_it_reaches_the_weights(reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    patch_forward(monkeypatch, 4, _InfiniteGradient.apply)
    with pytest.raises(GenError, match=r"at step 4\b"):
        run_train(config(run, ckpt_every=0))
    assert latest(run) == "step-0000003"
    assert all_finite(ckpt(run, 3))
    assert_identical(state(ckpt(run, 3)), state(ckpt(reference, 3)), "last good state")


# -------------------------------------------------------------------------------- 4. Ctrl-C


def write_json_config(path: Path, **changes) -> Path:
    path.write_text(json.dumps({**RECIPE, **changes}))
    return path


def raise_keyboard_interrupt(out):
    raise KeyboardInterrupt


def test_ctrl_c_saves_the_step_and_resume_is_exact(reference, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    cfg = write_json_config(tmp_path / "recipe.json", ckpt_every=0)
    patch_forward(monkeypatch, 4, raise_keyboard_interrupt)  # in the middle of step 4
    assert main(["train", "image", "--config", str(cfg), "--out", str(run), "--device", "cpu"]) == 130
    assert "interrupted" in capsys.readouterr().err
    # Step 4 was in flight and is dropped: the checkpoint is the state after step 3.
    assert latest(run) == "step-0000003"
    assert_identical(state(ckpt(run, 3)), state(ckpt(reference, 3)), "interrupted state")

    monkeypatch.undo()
    # No --steps and no --config: the run continues to its own step count.
    assert main(["train", "image", "--out", str(run), "--resume", "--device", "cpu"]) == 0
    assert latest(run) == f"step-{STEPS:07d}"
    assert_identical(state(ckpt(run, STEPS)), state(ckpt(reference, STEPS)), "final")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_the_update_lands_after_it(reference, tmp_path, monkeypatch, signum):
    # A real Ctrl-C (or kill) arriving between the optimiser step and the EMA update must not
    # leave a half-applied step: the step completes, is saved, and resume is exact.
    run = tmp_path / "run"
    # Python's own Ctrl-C handler, whatever an earlier test or library left installed (seen once in CI)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    original, calls = EMA.update, [0]

    def update(self, model):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), signum)
        return original(self, model)

    monkeypatch.setattr(EMA, "update", update)
    with pytest.raises(KeyboardInterrupt):
        run_train(config(run, ckpt_every=0))
    assert latest(run) == "step-0000004"
    assert_identical(state(ckpt(run, 4)), state(ckpt(reference, 4)), "interrupted state")
    monkeypatch.undo()
    run_train(config(run), resume=True)
    signal.signal(signal.SIGINT, previous)
    assert_identical(state(ckpt(run, STEPS)), state(ckpt(reference, STEPS)), "final")


# ----------------------------------------------------------------------------------- 5. DDP


def write_image_folder(root: Path, n: int, size: int) -> Path:
    """n toy-world images with captions as an imagefolder (the workers skip the toy renderer)."""
    from gen.data import open_dataset

    root.mkdir()
    data = open_dataset("toy", size=size, n=n, seed=0)
    with open(root / "metadata.jsonl", "w") as meta:
        for i in range(n):
            item = data[i]
            pixels = ((item["image"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(root / f"{i}.png")
            meta.write(json.dumps({"file_name": f"{i}.png", "text": item["text"]}) + "\n")
    return root


def test_ddp_two_processes_hold_identical_weights_and_resume_exactly(tmp_path):
    data = write_image_folder(tmp_path / "data", 12, 8)
    cfg = write_json_config(tmp_path / "recipe.json", data=str(data), data_n=None, batch=8, ckpt_every=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(cfg), str(tmp_path), "4", "2"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    digest = {(name, rank): (tmp_path / f"{name}.rank{rank}.digest").read_text()
              for name in ("full", "part", "resumed") for rank in (0, 1)}
    for name in ("full", "part", "resumed"):
        assert digest[name, 0] == digest[name, 1], f"{name}: the two ranks hold different weights"
    assert digest["part", 0] != digest["full", 0]
    assert digest["resumed", 0] == digest["full", 0], "resumed DDP run differs from the uninterrupted one"
    # Only rank 0 writes: one log line per step, one checkpoint folder per save.
    assert [r["step"] for r in log(tmp_path / "full")] == [1, 2, 3, 4]
    assert [r["step"] for r in log(tmp_path / "part")] == [1, 2, 3, 4]
    assert_identical(state(ckpt(tmp_path / "part", 4)), state(ckpt(tmp_path / "full", 4)), "DDP final")


# ----------------------------------------------------------------------------------- 6. CLI


def test_cli_trains_and_exports_a_loadable_pipeline(tmp_path):
    from gen.pipeline import Pipeline

    out = tmp_path / "run"
    assert main(["train", "image", "--data", "toy", "--model", "dit-tiny", "--steps", "3", "--batch", "4",
                 "--size", "8", "--out", str(out), "--device", "cpu"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["steps"], saved["batch"], saved["size"], saved["model"]) == (3, 4, 8, "dit-tiny")
    records = log(out)
    assert records and records[-1]["step"] == 3
    for r in records:
        assert np.isfinite(r["loss"]) and r["samples_per_s"] > 0
    # Linear warm-up over 100 steps: optimiser step s runs at lr * s / 100.
    assert records[-1]["lr"] == pytest.approx(1e-3 * 3 / 100)
    assert latest(out) == "step-0000003" and ckpt(out, 3).is_dir()
    pipe = Pipeline.from_pretrained(str(out / "pipeline"))
    images = pipe("a red ball left of a blue house", n=2, steps=2)
    assert len(images) == 2 and all(im.size == (8, 8) for im in images)


def test_cli_config_file_with_flags_taking_precedence(tmp_path):
    toml = tmp_path / "recipe.toml"
    toml.write_text("""
steps = 7
batch = 8
lr = 5e-4
size = 8
data-n = 8
bf16 = false
sample-every = 2
sample_steps = 2
sample_prompts = ["a red ball", "two blue stars"]
warmup = 1
seed = 5

[text_encoder]
arch = "tiny"
hash_vocab = 512
width = 32
layers = 1
heads = 2
embed_dim = 32
""")
    out = tmp_path / "run"
    assert main(["train", "image", "--config", str(toml), "--steps", "2", "--batch", "4", "--out", str(out),
                 "--device", "cpu", "--seed", "1"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["steps"], saved["batch"], saved["seed"]) == (2, 4, 1)  # the flags
    assert (saved["lr"], saved["data_n"], saved["sample_every"], saved["text_encoder"]) == (5e-4, 8, 2, TEXT)
    assert latest(out) == "step-0000002"
    grids = sorted((out / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step-0000002.png"]
    assert Image.open(grids[0]).size == (4 * 8, 2 * 8)  # four seeds across, one row per prompt


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be a positive integer, got 0"),
    (["--model", "dit-enormous"], "unknown model preset 'dit-enormous'"),
    (["--config", "{bad}"], "unknown training option(s) learning_rate"),
], ids=["steps-0", "unknown-model", "unknown-config-option"])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.toml"
    bad.write_text("learning-rate = 0.1\n")
    argv = [str(bad) if a == "{bad}" else a for a in argv]
    out = tmp_path / "run"
    assert main(["train", "image", "--size", "8", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gen: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


# -------------------------------------------------------------------------------- 7. learning


def test_loss_falls_when_overfitting_four_images(tmp_path):
    run = tmp_path / "run"
    steps = 150
    run_train(config(run, data_n=4, steps=steps, warmup=10, lr=3e-3, ema_decay=0.99, ckpt_every=0))
    losses = np.array([r["loss"] for r in log(run)])
    assert len(losses) == steps and np.isfinite(losses).all()
    first, last = losses[:25].mean(), losses[-25:].mean()
    assert last < 0.5 * first, f"loss {first:.4f} over the first 25 steps, {last:.4f} over the last 25"


def test_tensorboard_gets_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gen.cli import main

    out = tmp_path / "run"
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"text_encoder": TEXT, "data_n": 8}))
    assert main(["train", "image", "--data", "toy", "--model", "dit-tiny", "--steps", "4", "--batch", "2",
                 "--size", "8", "--log-every", "2", "--sample-every", "0", "--out", str(out), "--no-bf16",
                 "--config", str(cfg)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    logged = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert losses == pytest.approx(logged)


def test_prediction_flag_sets_the_schedule_of_the_exported_pipeline(tmp_path):
    from gen.pipeline import Pipeline

    out = tmp_path / "eps"
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"text_encoder": TEXT, "data_n": 8}))
    assert main(["train", "image", "--model", "dit-tiny", "--steps", "2", "--batch", "2", "--size", "8",
                 "--sample-every", "0", "--prediction", "eps", "--out", str(out), "--config", str(cfg)]) == 0
    pipe = Pipeline.from_pretrained(str(out / "pipeline"))
    assert pipe.schedule.prediction == "eps" and pipe.schedule.beta_schedule == "cosine"


# -------------------------------------------------------------------------------- 8. the fast path


@pytest.mark.slow  # torch.compile takes about a minute per model on the 2-core CPU
def test_compiled_training_matches_eager_and_resumes_either_way(reference, tmp_path):
    """--compile: the same losses as eager to bf16 round-off over 20 steps; a compiled run
    resumes uncompiled and an uncompiled one compiled (same state-dict keys); a compiled run
    resumed compiled ends bit-identical to one that was never stopped."""
    recipe = dict(steps=20, ckpt_every=10, bf16=True, keep_checkpoints=10)
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    run_train(config(eager, **recipe))
    run_train(config(compiled, **recipe, compile=True))
    assert (compiled / "compile-cache").is_dir()
    a, b = np.array([r["loss"] for r in log(eager)]), np.array([r["loss"] for r in log(compiled)])
    assert len(a) == len(b) == 20
    np.testing.assert_allclose(b, a, rtol=0.05, atol=0.01)  # bf16 round-off, compounded over 20 updates

    stopped = tmp_path / "stopped"
    run_train(config(stopped, **{**recipe, "steps": 10}, compile=True))
    run_train(config(stopped, **recipe, compile=True), resume=True)
    assert_identical(state(ckpt(stopped, 20)), state(ckpt(compiled, 20)), "compiled, resumed compiled")

    for first, then in ((True, False), (False, True)):
        run = tmp_path / f"switch-{first}"
        run_train(config(run, **{**recipe, "steps": 10}, compile=first))
        run_train(config(run, **recipe, compile=then), resume=True)
        assert latest(run) == "step-0000020" and all_finite(ckpt(run, 20))


# ------------------------------------------------------------------- allocator on the CPU

KEPT = r"""
import ctypes, json, torch
from gen.runtime import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
def freed(tuned):
    if tuned:
        assert keep_freed_memory()
    before = libc.mallinfo2()
    a = torch.empty(16 << 20, dtype=torch.uint8)
    during = libc.mallinfo2()
    del a
    after = libc.mallinfo2()
    return {"mapped": during.hblkhd - before.hblkhd, "kept": after.fordblks - before.fordblks}
print(json.dumps([freed(False), freed(True)]))
"""


def test_keep_freed_memory_serves_a_step_sized_tensor_from_the_heap_and_keeps_it():
    # glibc's own accounting (mallinfo2): by default a 16 MiB tensor is its own mapping, handed
    # back on free; after keep_freed_memory it comes from the heap, which keeps it for reuse.
    try:
        glibc = hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        glibc = False
    if not glibc:
        pytest.skip("not glibc >= 2.33")
    out = subprocess.run([sys.executable, "-c", KEPT], capture_output=True, text=True, check=True).stdout
    plain, tuned = json.loads(out)
    mib = 1 << 20
    assert plain["mapped"] >= 16 * mib and plain["kept"] < mib
    assert tuned["mapped"] < mib and tuned["kept"] >= 15 * mib  # less what joined the heap's top


def test_a_cpu_run_keeps_freed_memory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("gen.runtime.keep_freed_memory", lambda: calls.append(1) or True)
    run_train(config(tmp_path / "run", steps=1))
    assert calls == [1]
