"""Super-resolution stages: the training pairs (box-downsampling, crops), the input's
noise-conditioning augmentation (the forward process in closed form), `gen train sr` on the
shared loop (exact resume, the exported stage), and sampling from the stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gen.errors import GenError
from gen.pipeline import Pipeline
from gen.pipeline.superres import SuperResolution, augment, box_downsample, noise_timestep
from gen.train import TrainConfig, train
from gen.train.sr import random_crops
from samplers import NoiseSchedule

RECIPE = dict(kind="sr", model="sr-unet-tiny", size=16, scale=4, crop=8, batch=4, data_n=12, steps=4, warmup=2,
              lr=2e-3, ema_decay=0.9, bf16=False, log_every=1, sample_every=4, ckpt_every=2, seed=0,
              sample_steps=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def run(out, resume=False, **changes):
    cfg = TrainConfig.from_dict({**RECIPE, "out": str(out), **changes})
    return train(cfg, resume=resume, device="cpu", progress=False)


def test_box_downsample_is_the_mean_of_each_block():
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    low = box_downsample(x, 4)
    blocks = x.reshape(2, 3, 2, 4, 3, 4).mean(dim=(3, 5))
    assert low.shape == (2, 3, 2, 3) and torch.allclose(low, blocks)
    with pytest.raises(GenError, match="not divisible by --scale 4"):
        box_downsample(torch.zeros(1, 3, 6, 8), 4)


def test_random_crops_are_windows_of_their_own_image_and_follow_the_generator():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    crops = random_crops(x, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 4, 4)
    for img, crop in zip(x, crops):
        y, x0 = divmod(int(crop[0, 0, 0]) % 100, 10)  # the values index their position
        assert torch.equal(crop, img[:, y:y + 4, x0:x0 + 4])
    assert torch.equal(crops, random_crops(x, 4, torch.Generator().manual_seed(0)))


def test_augmentation_is_the_forward_process_at_the_level():
    sched = NoiseSchedule.create(beta_schedule="cosine", prediction="v")
    low, noise = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    t = torch.tensor([0, 500, 999])
    out = augment(low, t, noise, sched)
    ab = torch.tensor([sched.alpha_bars[i] for i in t.tolist()])[:, None, None, None]
    torch.testing.assert_close(out, ab.sqrt() * low + (1 - ab).sqrt() * noise)
    assert (out[0] - low[0]).abs().max() < 0.05  # level 0: the input, nearly untouched
    assert noise_timestep(0.0, 1000) == 0 and noise_timestep(1.0, 1000) == 999 and noise_timestep(0.2, 1000) == 200
    with pytest.raises(GenError, match="--sr-noise must be between 0 and 1"):
        noise_timestep(1.5, 1000)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("sr") / "run"
    run(out)
    return out


def test_sr_training_resumes_bit_exactly_and_exports_a_stage(reference, tmp_path):
    out = tmp_path / "run"
    run(out, steps=2)
    run(out, resume=True)
    for name in ("model", "ema"):
        a = load_file(out / "checkpoints" / "step-0000004" / f"{name}.safetensors")
        b = load_file(reference / "checkpoints" / "step-0000004" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    index = json.loads((reference / "pipeline" / "model_index.json").read_text())
    assert index["kind"] == "sr" and index["text_encoder"] is None
    assert index["defaults"]["scale"] == 4 and index["defaults"]["sr_noise"] == 0.2
    # the sample grid: one row per fixed image, low-res | bicubic | SR | truth
    grid = np.asarray(Image.open(reference / "samples" / "step-0000004.png"))
    assert grid.shape == (4 * 16, 4 * 16, 3)


def test_the_stage_upscales_by_its_scale_deterministically_per_seed(reference):
    stage = SuperResolution.from_pretrained(str(reference / "pipeline"))
    low = torch.rand(3, 3, 5, 7) * 2 - 1  # any size: the stage is fully convolutional
    a = stage.upscale(low, seeds=[0, 1, 2], steps=3)
    assert a.shape == (3, 3, 20, 28) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, stage.upscale(low, seeds=[0, 1, 2], steps=3))
    # per image, not per batch (up to the round-off of batched convolutions)
    torch.testing.assert_close(a[1:2], stage.upscale(low[1:2], seeds=[1], steps=3), rtol=0, atol=1e-4)
    assert not torch.equal(a[0], stage.upscale(low[:1], seeds=[5], steps=3)[0])
    assert not torch.equal(a, stage.upscale(low, seeds=[0, 1, 2], steps=3, sr_noise=0.6))
    with pytest.raises(GenError, match="takes images"):
        stage.upscale(torch.zeros(1, 4, 5, 5), seeds=[0])
    with pytest.raises(GenError, match="super-resolution stage"):
        Pipeline.from_pretrained(str(reference / "pipeline"))


def test_gen_upscale_names_outputs_after_inputs_keeps_existing_files_and_records_parameters(
        reference, tmp_path, capsys):
    from gen.cli import main

    rgb, gray = tmp_path / "photo.png", tmp_path / "gray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(rgb)
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(gray)
    out = tmp_path / "out"
    out.mkdir()
    stage = str(reference / "pipeline")
    assert main(["upscale", str(rgb), str(gray), "--model", stage, "--steps", "2", "--seed", "3", "--out", str(out),
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "converted L input to RGB" in captured.err
    first = out / "photo-x4.png"
    assert captured.out.split() == [str(first), str(out / "gray-x4.png")]
    assert Image.open(first).size == (20, 24) and Image.open(out / "gray-x4.png").size == (16, 16)
    meta = json.loads(Image.open(first).text["gen"])
    from gen.runtime import compute_precision

    assert meta == {"upscale": "photo.png", "seed": 3, "steps": 2, "sampler": "ddim", "sr_noise": 0.2, "scale": 4,
                    "model": stage, "precision": compute_precision("auto", torch.device("cpu"))}
    before = first.read_bytes()
    assert main(["upscale", str(rgb), "--model", stage, "--steps", "2", "--seed", "3", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "photo-x4-1.png")
    assert first.read_bytes() == before  # kept, and the same seed drew the same image
    assert (out / "photo-x4-1.png").read_bytes() == before


def test_reconstruction_scores_against_closed_forms():
    from gen.evaluate import reconstruction_scores

    truth = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    same = reconstruction_scores(truth, truth)
    assert same["ssim"] == pytest.approx(1.0) and same["edge_energy"] == pytest.approx(1.0)
    shifted = reconstruction_scores(truth + 0.2, truth)  # 0.1 on [0, 1] pixels: MSE 0.01, 20 dB
    assert shifted["psnr"] == pytest.approx(20.0, abs=1e-6) and shifted["edge_energy"] == pytest.approx(1.0)
    flat = reconstruction_scores(torch.zeros_like(truth), truth)
    assert flat["edge_energy"] == 0
    from torchmetrics.functional.image import structural_similarity_index_measure

    many = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1  # more than one chunk
    whole = structural_similarity_index_measure((many.double() + 1) / 2, (truth[:1].expand_as(many).double() + 1) / 2,
                                                data_range=1.0)
    assert reconstruction_scores(many, truth[:1].expand_as(many))["ssim"] == pytest.approx(whole.item(), rel=1e-9)


def test_gen_eval_sr_reports_the_stage_and_bicubic(reference, capsys):
    from gen.cli import main

    assert main(["eval", "sr", "--model", str(reference / "pipeline"), "--n", "4", "--size", "16", "--steps", "2",
                 "--batch", "3", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 4 and report["scale"] == 4 and report["seed"] == 4242
    for name in ("sr", "bicubic"):
        assert set(report[name]) == {"psnr", "ssim", "edge_energy"}
    assert 10 < report["bicubic"]["psnr"] < 40 and report["bicubic"]["edge_energy"] < 1  # bicubic blurs


def test_the_regression_model_learns_and_draws_in_one_pass(tmp_path):
    out = tmp_path / "reg"
    run(out, sr_regression=True, sr_aug_max=0.5, sr_noise=0.2, steps=40, data_n=4, crop=None, sample_every=0,
        ckpt_every=40, lr=3e-3, ema_decay=0.0)
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])  # overfitting four images
    stage = SuperResolution.from_pretrained(str(out / "pipeline"))
    assert stage.regression and stage.defaults.steps == 1 and stage.defaults.sr_noise == 0.2
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    zero, blank = torch.zeros(2, dtype=torch.long), torch.zeros(2, 3, 16, 16)
    stage.precision = "fp32"
    with torch.no_grad():
        direct = stage.denoiser(blank, zero, {"low_res": low, "noise_level": zero}).clamp(-1, 1)
        # at its level the input is noised by the forward process (closed form), the noise from each seed
        t = noise_timestep(0.2, stage.schedule.num_train_timesteps)
        ab = float(stage.schedule.alpha_bars[t])
        noise = torch.stack([torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(s)) for s in (0, 1)])
        noised = ab**0.5 * low + (1 - ab) ** 0.5 * noise
        augmented = stage.denoiser(blank, zero, {"low_res": noised, "noise_level": torch.full((2,), t)}).clamp(-1, 1)
    assert torch.equal(stage.upscale(low, seeds=[0, 1], sr_noise=0.0), direct)  # level 0: the input itself
    torch.testing.assert_close(stage.upscale(low, seeds=[0, 1]), augmented, atol=1e-6, rtol=0)
    assert not torch.allclose(augmented, direct, atol=1e-3)
    stage.precision = "bf16"  # autocast: bf16 rounding (8 mantissa bits) of a 2-level U-Net, no more
    assert (stage.upscale(low, seeds=[0, 1], sr_noise=0.0) - direct).abs().max() < 0.05
    with pytest.raises(GenError, match="regression"):
        stage.upscale(low, seeds=[0, 1], steps=5)


def test_install_ships_a_trained_stage_as_the_default_of_its_kind(reference, tmp_path, monkeypatch):
    import gen.pipeline.weights
    from gen.pipeline import install, load

    monkeypatch.setattr(gen.pipeline.weights, "WEIGHTS_DIR", tmp_path)
    target = install(reference / "pipeline", "my-sr")
    assert target == tmp_path / "my-sr" and (tmp_path / "DEFAULT_SR").read_text() == "my-sr\n"
    assert isinstance(load("default", kind="sr"), SuperResolution)
    stored = load_file(str(target / "denoiser" / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}


def test_gradient_accumulation_is_the_large_batch_step(tmp_path):
    """SR3's regression loss without augmentation has no noise in it (whole images, no crop), so a step over 4
    micro-batches of 2 must move the weights as one step over the batch of 8 does."""
    from safetensors.torch import load_file

    common = dict(sr_regression=True, sr_aug_max=0.0, crop=None, batch=8, data_n=8, steps=2, sample_every=0,
                  ckpt_every=1, keep_checkpoints=3)
    run(tmp_path / "one", **common)
    run(tmp_path / "four", accumulate=4, **common)
    for step in (1, 2):
        one = load_file(tmp_path / "one" / "checkpoints" / f"step-{step:07d}" / "model.safetensors")
        four = load_file(tmp_path / "four" / "checkpoints" / f"step-{step:07d}" / "model.safetensors")
        for name in one:
            torch.testing.assert_close(four[name], one[name], atol=2e-6, rtol=1e-5)
    start = load_file(tmp_path / "one" / "checkpoints" / "step-0000001" / "model.safetensors")
    assert any(not torch.equal(start[k], one[k]) for k in one)  # the second step moved the weights
    logs = [[json.loads(line) for line in (tmp_path / r / "log.jsonl").read_text().splitlines()]
            for r in ("one", "four")]
    for a, b in zip(*logs):  # the same loss and the same gradient (norm before clipping: Adam hides a scale)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    with pytest.raises(GenError, match="--accumulate 3 must divide the batch each process takes \\(8\\)"):
        run(tmp_path / "three", accumulate=3, **common)


def test_a_run_plots_its_log_and_its_export_carries_a_card(tmp_path):
    from gen.train.report import read_log

    out = tmp_path / "run"
    run(out, steps=4, ckpt_every=2, sample_every=0)
    rows = read_log(out / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    plot = Image.open(out / "loss.png")
    pixels = np.asarray(plot.convert("RGB"))
    assert plot.size == (640, 440) and (pixels[:220] == (31, 119, 180)).all(axis=-1).sum() > 50  # the loss line
    assert (pixels[220:] == (214, 39, 40)).all(axis=-1).sum() > 50  # samples/s
    card = (out / "pipeline" / "README.md").read_text()
    assert "4 steps, 16 samples seen" in card and "`sr-unet-tiny`" in card
    assert f"{rows[-1]['loss']:.4g} at step 4" in card
    assert SuperResolution.from_pretrained(out / "pipeline")  # the card does not disturb loading


def test_fp16_with_a_gradient_scaler_where_bf16_is_missing_resumes_exactly(tmp_path, monkeypatch):
    """A GPU without bf16 trains under fp16 autocast with a loss scale; the scale is part of
    the checkpoint, so a resumed run ends where an uninterrupted one does. (Forced here on
    the CPU, which runs fp16 autocast and the scaler alike.)"""
    from safetensors.torch import load_file

    from gen.train import fast

    monkeypatch.setattr(fast, "mixed_precision", lambda device, bf16: torch.float16 if bf16 else None)
    common = dict(bf16=True, steps=4, ckpt_every=2, sample_every=0)
    run(tmp_path / "whole", **common)
    state = json.loads((tmp_path / "whole" / "checkpoints" / "step-0000002" / "state.json").read_text())
    assert state["grad_scaler"]["scale"] > 0
    run(tmp_path / "half", **{**common, "steps": 2})
    run(tmp_path / "half", resume=True, **common)
    a = load_file(tmp_path / "whole" / "checkpoints" / "step-0000004" / "model.safetensors")
    b = load_file(tmp_path / "half" / "checkpoints" / "step-0000004" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(torch.tensor(json.loads(line)["loss"]))
               for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines())
