"""Reconstruction metrics and `gen eval vae`: PSNR against its closed form and torchmetrics,
LPIPS against the lpips package (with a backbone file the test writes), the command's
report against an independent recomputation, and its errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch

import models
from gen.cli import main
from gen.toyworld import toy_image
from metrics.reconstruction import (alexnet_weights_path, lpips, lpips_network, mean_psnr, psnr,
                                    psnr_over_batches, summarize_psnr)
from metrics.weights import REGISTRY


def _images(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("offset", [0.5, 0.1, 1e-3])
def test_psnr_of_a_constant_offset_is_the_closed_form(offset):
    x = _images()
    expected = 10 * math.log10(2.0**2 / offset**2)  # MSE = offset^2, range 2
    assert torch.allclose(psnr(x, x + offset), torch.full((4,), expected, dtype=torch.float64), atol=1e-4)
    # data_range enters as R^2: range 1 is 20 log10(2) dB less than range 2
    assert torch.allclose(psnr(x, x + offset, data_range=1.0), torch.full((4,), expected - 20 * math.log10(2),
                                                                         dtype=torch.float64), atol=1e-4)


def test_psnr_matches_torchmetrics_per_sample_and_over_batches():
    from torchmetrics.image import PeakSignalNoiseRatio

    x = _images(6)
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    ref = PeakSignalNoiseRatio(data_range=2.0, reduction="none", dim=(1, 2, 3))(y, x)
    ours = psnr(x, y)
    assert ours.dtype == torch.float64 and ours.shape == (6,)
    assert torch.allclose(ours, ref.double(), atol=1e-4)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    assert torch.allclose(psnr_over_batches(batches), ours)
    assert mean_psnr(batches) == pytest.approx(ref.mean().item(), abs=1e-4)
    summary = summarize_psnr(ours)
    assert summary["n"] == 6 and summary["min"] <= summary["p5"] <= summary["mean"]
    assert summary["p5"] == pytest.approx(np.percentile(ours.numpy(), 5))


def test_psnr_is_infinite_for_identical_samples_and_falls_as_reconstructions_worsen():
    x = _images()
    assert torch.isinf(psnr(x, x.clone())).all()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    values = [psnr(x, x + s * noise).mean().item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert values == sorted(values, reverse=True)
    clips = x.unsqueeze(2).expand(-1, -1, 3, -1, -1)  # (B, C, T, H, W): one value per clip
    assert torch.allclose(psnr(clips, clips + 0.1), psnr(x, x + 0.1))


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        psnr(_images(2), _images(3))


# ---------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def alexnet_features(tmp_path_factory):
    """A random AlexNet backbone in torchvision's checkpoint layout (features only: 10 MB)."""
    import torchvision

    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("alexnet") / "alexnet-features.pth"
    torch.save(state, path)
    return path


def test_lpips_absent_weights_give_none(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert alexnet_weights_path() == tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert lpips_network() is None


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # the lpips package's torchvision call
def test_lpips_matches_the_lpips_package(alexnet_features):
    import lpips as reference
    import torch.nn.functional as F

    network = lpips_network(weights=alexnet_features)
    ref = reference.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    ref.net.load_state_dict(network.net.state_dict())  # same backbone slices
    x = _images(3, size=64)
    y = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(-1, 1)
    with torch.no_grad():
        expected = ref(x, y).flatten()
        small = F.interpolate(x, size=32, mode="bilinear"), F.interpolate(y, size=32, mode="bilinear")
        upsampled = ref(*(F.interpolate(v, size=64, mode="bilinear") for v in small)).flatten()
    assert torch.allclose(lpips(network, x, y), expected, atol=1e-5)
    assert torch.allclose(lpips(network, *small), upsampled, atol=1e-5)  # small sides are upsampled to 64
    assert torch.allclose(lpips(network, x, x), torch.zeros(3), atol=1e-6)


# ---------------------------------------------------------------------------- gen eval vae


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    torch.manual_seed(0)
    vae = models.create_vae(factor=4, channels=(16, 16, 16), norm_groups=8, mid_attention=False)
    return vae.save_pretrained(tmp_path_factory.mktemp("vae") / "tiny-vae")


def _run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_vae_json_report(tiny_vae, alexnet_features, tmp_path, monkeypatch, capsys):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "alexnet-owt-7be5be79.pth").write_bytes(alexnet_features.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    digest = hashlib.sha256(alexnet_features.read_bytes()).hexdigest()  # cache files are hash-checked: record it
    monkeypatch.setitem(REGISTRY, "alexnet", dataclasses.replace(REGISTRY["alexnet"], sha256=digest))
    torch.set_num_threads(2)
    r = _run_json(capsys, ["eval", "vae", "--model", str(tiny_vae), "--n", "8", "--size", "32", "--json",
                           "--device", "cpu"])
    assert (r["class"], r["factor"], r["n"], r["size"], r["seed"]) == ("ImageVAE", 4, 8, 32, 4242)

    # PSNR recomputed here: the same fresh renders through the same VAE, numpy closed form
    vae = models.load_pretrained(tiny_vae)
    pixels = np.stack([toy_image(i, 32, seed=4242).pixels for i in range(8)])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x)).clamp(-1, 1)
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1).numpy()
    per_image = 10 * np.log10(4.0 / mse)
    assert r["psnr"]["mean"] == pytest.approx(per_image.mean(), abs=1e-3)
    assert r["psnr"]["p5"] == pytest.approx(np.percentile(per_image, 5), abs=1e-3)
    assert 0 < r["psnr"]["min"] <= r["psnr"]["p5"] <= r["psnr"]["mean"] < 60

    assert r["lpips"] is not None and 0 < r["lpips"]["mean"] < 2  # the backbone file is present
    j = r["judge"]
    assert 1 <= j["n"] <= 8 and j["kinds"] == ["single", "wearing"]
    for attr in ("object", "hat", "all"):
        o, c = j["originals"][attr], j["reconstructions"][attr]
        assert 0 <= o <= 1 and 0 <= c <= 1
        assert j["difference_points"][attr] == pytest.approx(100 * (c - o))
    assert j["originals"]["object"] == 1.0  # the shipped judge reads the renders themselves

    # --seed picks another set of fresh images
    again = _run_json(capsys, ["eval", "vae", "--model", str(tiny_vae), "--n", "2", "--size", "32", "--json",
                               "--device", "cpu", "--seed", "7"])
    assert again["seed"] == 7


def test_eval_vae_text_report_says_when_lpips_weights_are_missing(tiny_vae, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["eval", "vae", "--model", str(tiny_vae), "--n", "2", "--size", "16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PSNR: mean" in out and "5th percentile" in out
    assert f"LPIPS: weights not present ({tmp_path / 'hub' / 'checkpoints'}" in out
    assert "Toy judge accuracy" in out or "no judgeable samples" in out


def test_eval_vae_video(tmp_path, monkeypatch, capsys):
    from models.video_vae import create_video_vae

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    path = create_video_vae(spatial_factor=4, temporal_factor=2, channels=(8, 16, 16)).save_pretrained(tmp_path / "v")
    r = _run_json(capsys, ["eval", "vae", "--video", "--model", str(path), "--n", "2", "--size", "16",
                           "--json", "--device", "cpu"])
    assert (r["class"], r["kind"], r["frames"], r["temporal_factor"]) == ("VideoVAE", "clips", 5, 2)
    assert 0 < r["psnr"]["mean"] < 60 and r["psnr"]["n"] == 2
    assert r["judge"]["n"] == 2 * 5  # every frame of each one-object clip
    assert main(["eval", "vae", "--video", "--model", str(path), "--frames", "4", "--n", "1"]) == 2
    assert "--frames must be 1 + k * 2" in capsys.readouterr().err


def test_eval_vae_errors(tiny_vae, tmp_path, monkeypatch, capsys):
    def error(argv):
        capsys.readouterr()
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "unknown VAE 'no-such-vae'" in error(["eval", "vae", "--model", "no-such-vae"])
    assert "--size 30 is not divisible by the VAE factor 4" in error(
        ["eval", "vae", "--model", str(tiny_vae), "--size", "30"])
    assert "not the VideoVAE" in error(["eval", "vae", "--model", str(tiny_vae), "--video"])
    assert "--n must be between" in error(["eval", "vae", "--model", str(tiny_vae), "--n", "0"])
    assert "not built yet" in error(["eval", "images"])
    import gen.pipeline.weights

    monkeypatch.setattr(gen.pipeline.weights, "WEIGHTS_DIR", tmp_path)  # no shipped VAE
    assert "toy-vae is not installed" in error(["eval", "vae"])


def test_eval_judge_reports_every_shipped_judge_on_fresh_renders(capsys):
    from gen.cli import main

    assert main(["eval", "judge", "--n", "60", "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [r["judge"] for r in reports] == ["toy-judge-image", "toy-judge-scene", "toy-judge-video", "toy-judge-video"]
    for report in reports:
        assert report["n"] == 60 and report["seed"] == 4242
        assert all(v >= 0.95 for v in report["accuracy"].values()), report
