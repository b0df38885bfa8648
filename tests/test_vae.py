"""Image VAE, `gen train vae`, and latent diffusion end to end on tiny configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import models
from gen.cli import main
from gen.pipeline import WEIGHTS_DIR, Pipeline
from gen.toyworld import toy_image

TINY_VAE = {"factor": 4, "latent_channels": 4, "channels": (8, 16, 16), "norm_groups": 4}
TEXT = {"arch": "tiny", "hash_vocab": 512, "width": 32, "layers": 1, "heads": 2, "embed_dim": 32}


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(n, size, seed=4242):
    pixels = np.stack([toy_image(i, size, seed=seed).pixels for i in range(n)])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_shapes_scaling_and_errors():
    vae = models.create_vae(**TINY_VAE)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 4, 4, 6) and vae.decode(z).shape == x.shape
    scale, shift = vae.fit_scaling(_toy(16, 16))
    z = vae.encode(_toy(16, 16))
    assert abs(z.mean().item()) < 1e-4 and abs(z.std().item() - 1) < 1e-4
    assert vae.config.scaling_factor == scale and vae.config.shift_factor == shift
    with pytest.raises(ValueError, match="not divisible by the VAE factor 4"):
        vae.encode(torch.zeros(1, 3, 18, 16))
    with pytest.raises(ValueError, match="factor must be one of"):
        models.create_vae(factor=3)
    with pytest.raises(ValueError, match=r"decodes latents \(B, 4, h, w\)"):
        vae.decode(torch.zeros(1, 3, 4, 4))


def test_save_load_round_trip(tmp_path):
    vae = models.create_vae(**TINY_VAE)
    vae.fit_scaling(_toy(4, 16))
    vae.save_pretrained(tmp_path / "vae")
    back = models.load_pretrained(tmp_path / "vae")
    assert back.config == vae.config
    x = _toy(2, 16)
    with torch.no_grad():
        assert torch.equal(back.decode(back.encode(x)), vae.decode(vae.encode(x)))


def test_shipped_vae_reconstructs_fresh_toy_images_above_30_db():
    vae = models.load_pretrained(WEIGHTS_DIR / "toy-vae").eval()
    x = _toy(24, 64, seed=777)
    with torch.no_grad():
        rec = vae.decode(vae.encode(x)).clamp(-1, 1)
    psnr = 10 * torch.log10(4 / ((rec - x) ** 2).flatten(1).mean(1))
    assert psnr.mean() > 30.0, psnr


def test_tiled_decoding_has_no_seams():
    vae = models.load_pretrained(WEIGHTS_DIR / "toy-vae").eval()
    x = _toy(1, 128, seed=5)
    with torch.no_grad():
        z = vae.encode(x)
        whole = vae.decode(z)
        tiled = vae.decode(z, tile=64, overlap=0.25)
    assert tiled.shape == whole.shape
    diff = (tiled - whole).abs()
    assert diff.mean() < 0.01
    # No seam: the tiled image's jump across the tile boundary is no larger than the
    # untiled image's jump there (plus a small tolerance).
    for axis in (2, 3):
        edge = lambda img: (img.narrow(axis, 48, 1) - img.narrow(axis, 47, 1)).abs().mean()  # noqa: E731
        assert edge(tiled) < edge(whole) + 0.02


def test_gen_train_vae_writes_a_scaled_vae(tmp_path):
    cfg = tmp_path / "vae.json"
    cfg.write_text(json.dumps({"vae_config": TINY_VAE, "data_n": 16}))
    out = tmp_path / "run"
    assert main(["train", "vae", "--size", "16", "--steps", "3", "--batch", "4", "--out", str(out),
                 "--sample-every", "3", "--log-every", "1", "--config", str(cfg), "--no-bf16"]) == 0
    vae = models.load_pretrained(out / "vae")
    assert vae.config.scaling_factor != 1.0 and (out / "samples" / "step-0000003.png").is_file()
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert {"recon", "kl", "psnr"} <= set(record)


def test_latent_diffusion_trains_samples_and_caches_latents(tmp_path):
    vae = models.create_vae(**TINY_VAE)
    vae.fit_scaling(_toy(8, 16))
    vae.save_pretrained(tmp_path / "vae")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"text_encoder": TEXT, "data_n": 8}))
    runs = {}
    for name, extra in (("plain", []), ("cached", ["--cache-latents"])):
        out = tmp_path / name
        assert main(["train", "image", "--model", "dit-tiny", "--vae", str(tmp_path / "vae"), "--size", "16",
                     "--steps", "4", "--batch", "4", "--sample-every", "0", "--out", str(out), "--no-bf16",
                     "--config", str(cfg), *extra]) == 0
        runs[name] = out
    assert (runs["cached"] / "latent-cache.npy").is_file() and not (runs["plain"] / "latent-cache.npy").exists()
    assert np.load(runs["cached"] / "latent-cache-done.npy").sum() == 8  # 4 steps x 4 of 8 images: all seen
    # Caching only avoids re-encoding: the runs end with the same weights.
    a = models.load_pretrained(runs["plain"] / "pipeline" / "denoiser")
    b = models.load_pretrained(runs["cached"] / "pipeline" / "denoiser")
    assert a.config.in_channels == 4 and a.config.sample_size == 4
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    pipe = Pipeline.from_pretrained(str(runs["plain"] / "pipeline"))
    assert pipe.vae is not None
    images = pipe("a cat", n=1, steps=2)
    assert images[0].size == (16, 16)
    out_png = tmp_path / "cat.png"
    assert main(["image", "a cat", "--model", str(runs["plain"] / "pipeline"), "--steps", "2",
                 "--out", str(out_png)]) == 0 and out_png.is_file()


def test_vae_and_denoiser_channels_must_match(tmp_path, capsys):
    vae = models.create_vae(**{**TINY_VAE, "latent_channels": 8})
    vae.save_pretrained(tmp_path / "vae")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"text_encoder": TEXT, "data_n": 4, "model_overrides": {"in_channels": 4}}))
    code = main(["train", "image", "--model", "dit-tiny", "--vae", str(tmp_path / "vae"), "--size", "16",
                 "--steps", "1", "--batch", "2", "--out", str(tmp_path / "run"), "--config", str(cfg)])
    assert code == 2 and "8 latent channels" in capsys.readouterr().err


def test_gen_train_vae_video_trains_a_causal_clip_autoencoder(tmp_path, capsys):
    cfg = tmp_path / "vae.json"
    cfg.write_text(json.dumps({"vae_config": {"channels": [8, 16, 16], "latent_channels": 4}, "data_n": 8}))
    out = tmp_path / "run"
    assert main(["train", "vae", "--video", "--size", "16", "--frames", "5", "--fps", "4", "--steps", "2",
                 "--batch", "2", "--out", str(out), "--sample-every", "2", "--config", str(cfg), "--no-bf16"]) == 0
    vae = models.load_pretrained(out / "vae")
    assert isinstance(vae, models.VideoVAE) and vae.config.scaling_factor != 1.0
    assert (out / "samples" / "step-0000002.png").is_file()
    code = main(["train", "vae", "--video", "--size", "16", "--frames", "6", "--steps", "1", "--batch", "2",
                 "--out", str(tmp_path / "bad"), "--config", str(cfg)])
    assert code == 2 and "1 + k*2 frames" in capsys.readouterr().err


def test_vae_training_can_start_from_a_saved_vae(tmp_path, capsys):
    start = models.create_vae(**TINY_VAE)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.01)
    start.save_pretrained(tmp_path / "start")
    cfg = tmp_path / "vae.json"
    cfg.write_text(json.dumps({"vae_config": TINY_VAE, "data_n": 4, "lr": 1e-12}))
    out = tmp_path / "run"
    assert main(["train", "vae", "--size", "16", "--steps", "1", "--batch", "2", "--out", str(out), "--no-bf16",
                 "--init", str(tmp_path / "start"), "--config", str(cfg)]) == 0
    tuned = models.load_pretrained(out / "vae")
    for (name, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    other = models.create_vae(**{**TINY_VAE, "latent_channels": 8})
    other.save_pretrained(tmp_path / "other")
    assert main(["train", "vae", "--size", "16", "--steps", "1", "--batch", "2", "--out", str(tmp_path / "r2"),
                 "--init", str(tmp_path / "other"), "--config", str(cfg)]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_lpips_term_trains_through_random_alexnet_weights(tmp_path, monkeypatch):
    # The LPIPS term is used when AlexNet's weights are present: give it random ones in the
    # torchvision file format and check the loss logs it and it has a gradient.
    import dataclasses
    import hashlib

    import torchvision

    from metrics import reconstruction
    from metrics.weights import REGISTRY

    weights = tmp_path / REGISTRY["alexnet"].filename  # where the registry looks: $GEN_WEIGHTS
    torch.save(torchvision.models.alexnet().state_dict(), weights)
    monkeypatch.setenv("GEN_WEIGHTS", str(tmp_path))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()  # cache files are hash-checked: record this one's
    monkeypatch.setitem(REGISTRY, "alexnet", dataclasses.replace(REGISTRY["alexnet"], sha256=digest))
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    net = reconstruction.lpips_network("cpu", weights)
    reconstruction.lpips(net, x * 2 - 1, torch.zeros(2, 3, 16, 16)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    cfg = tmp_path / "vae.json"
    cfg.write_text(json.dumps({"vae_config": TINY_VAE, "data_n": 4}))
    out = tmp_path / "run"
    assert main(["train", "vae", "--size", "16", "--steps", "1", "--batch", "2", "--out", str(out),
                 "--log-every", "1", "--config", str(cfg), "--no-bf16"]) == 0
    assert "lpips" in json.loads((out / "log.jsonl").read_text().splitlines()[-1])
