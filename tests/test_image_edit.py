"""Image-to-image (SDEdit) and inpainting: `Pipeline.generate(init=, strength=, mask=)`,
the cascade's, and `gen image --init-image --strength --mask` (tiny random models: the
mechanism, not the quality)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import models
from gen.cli import main
from gen.errors import GenError
from gen.pipeline import Pipeline, SamplingDefaults
from gen.pipeline.cascade import Cascade
from gen.pipeline.superres import SuperResolution
from samplers import NoiseSchedule, make_timesteps, q_sample

pytestmark = pytest.mark.usefixtures("one_thread")


def _text():
    return models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                       embed_dim=32, context_length=16))


def _jitter(net):
    with torch.no_grad():  # zero-initialised output layers would give the same picture for every input
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def pixel_pipe():
    torch.manual_seed(0)
    enc = _text()
    net = _jitter(models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim))
    return Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=10))


@pytest.fixture(scope="module")
def latent_pipe():
    torch.manual_seed(1)
    enc = _text()
    vae = models.create_vae(factor=2, latent_channels=4, channels=(16, 16), norm_groups=8, mid_attention=False)
    net = _jitter(models.create("dit-tiny", sample_size=4, in_channels=4, text_dim=enc.dim,
                                pooled_dim=enc.pooled_dim))
    return Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=6),
                    vae=vae)


def _picture(seed: int, size: int = 8) -> torch.Tensor:
    return torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _half_mask(size: int = 8) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 2:] = 1  # redraw the right half
    return mask


class Recorder(nn.Module):
    """The pipeline's denoiser, recording each call's (x_t, t)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    @property
    def config(self):
        return self.net.config

    def forward(self, x, t, cond):
        self.calls.append((x.detach().clone(), t.clone()))
        return self.net(x, t, cond)


@pytest.mark.parametrize("which", ["pixel_pipe", "latent_pipe"])
def test_strength_zero_returns_the_image(request, which):
    pipe = request.getfixturevalue(which)
    init = _picture(3)
    out = pipe.generate(["a cat", "a dog"], [0, 1], init=init, strength=0.0)
    assert out.shape == (2, 3, 8, 8) and torch.equal(out, init.expand(2, -1, -1, -1))


def test_sdedit_starts_from_the_image_noised_to_the_strengths_step(pixel_pipe):
    """strength s with N steps: the last round(N s) of the sampler's timesteps run, from
    q_sample(init, their first, the seed's noise)."""
    init, steps = _picture(4), 10
    full = make_timesteps(1000, steps, pixel_pipe.defaults.spacing, pixel_pipe.schedule)
    net = pixel_pipe.denoiser
    pixel_pipe.denoiser = recorder = Recorder(net)
    try:
        for strength, runs in ((0.3, 3), (0.55, 6), (1.0, 10)):  # round(5.5) = 6 (ties to even)
            recorder.calls.clear()
            pixel_pipe.generate(["a cat"], [7], init=init, strength=strength, cfg=1.0)
            seen = [int(t[0]) for _, t in recorder.calls]
            assert seen == full[steps - runs:]
            noise = pixel_pipe.noise([7], (3, 8, 8))
            start = q_sample(init, torch.tensor([seen[0]]), noise, pixel_pipe.schedule)
            torch.testing.assert_close(recorder.calls[0][0], start)
    finally:
        pixel_pipe.denoiser = net
    redrawn = [(pixel_pipe.generate(["a cat"], [7], init=init, strength=s) - init).abs().mean() for s in (0.3, 1.0)]
    assert 0 < redrawn[0] < redrawn[1]  # more strength, further from the image


@pytest.mark.parametrize("which", ["pixel_pipe", "latent_pipe"])
def test_inpainting_keeps_the_unmasked_region_exactly(request, which):
    pipe = request.getfixturevalue(which)
    init, mask = _picture(5), _half_mask()
    out = pipe.generate(["a cat"], [2], init=init, mask=mask)
    assert torch.equal(out[..., :4], init[..., :4])
    assert (out[..., 4:] - init[..., 4:]).abs().mean() > 0.05


def test_inpainting_holds_the_known_pixels_in_every_steps_prediction(pixel_pipe):
    init, mask = _picture(6), _half_mask()
    predictions = []
    pixel_pipe.generate(["a cat"], [2], init=init, mask=mask, strength=0.7,
                        callback=lambda i, t, x, x0: predictions.append(x0.clone()))
    assert len(predictions) == 7
    for x0 in predictions:
        torch.testing.assert_close(x0[..., :4], init[..., :4])


def test_edits_refuse_bad_input(pixel_pipe):
    with pytest.raises(GenError, match="--strength must be between 0"):
        pixel_pipe.generate(["a cat"], [0], init=_picture(0), strength=1.5)
    with pytest.raises(GenError, match="give it with --init-image"):
        pixel_pipe.generate(["a cat"], [0], mask=_half_mask())
    with pytest.raises(GenError, match=r"at the output size, got \(1, 3, 16, 16\)"):
        pixel_pipe.generate(["a cat"], [0], init=_picture(0, 16))


@pytest.fixture(scope="module")
def cascade(pixel_pipe):
    torch.manual_seed(2)
    net = _jitter(models.create("sr-unet-tiny", sample_size=8))
    stage = SuperResolution(net, None, NoiseSchedule.create("cosine", prediction="v"),
                            SamplingDefaults(size=8, steps=2, cfg=1.0, scale=2, sr_noise=0.2))
    return Cascade(pixel_pipe, [stage])


def test_the_cascade_edits_at_its_output_size(cascade):
    init, mask = _picture(8, 16), _half_mask(16)
    assert torch.equal(cascade.generate(["a cat"], [1], init=init, strength=0.0), init)
    out = cascade.generate(["a cat"], [1], init=init, mask=mask)
    assert out.shape == (1, 3, 16, 16) and torch.equal(out[..., :8], init[..., :8])
    assert (out[..., 8:] - init[..., 8:]).abs().mean() > 0.05
    # the base redraws the image box-downsampled to its size
    base = cascade.base.generate(["a cat"], [1], init=torch.nn.functional.avg_pool2d(init, 2), strength=0.5)
    torch.testing.assert_close(cascade.generate(["a cat"], [1], init=init, strength=0.5),
                               cascade.stages[0].upscale(base, [1]))


def _png(path, pixels):
    Image.fromarray(pixels).save(path)
    return str(path)


def test_gen_image_init_image_strength_and_mask(tmp_path, capsys, pixel_pipe):
    folder = pixel_pipe.save_pretrained(tmp_path / "pipe")
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    init = _png(tmp_path / "still.png", still)
    code = main(["image", "a cat", "--model", str(folder), "--init-image", init, "--strength", "0",
                 "--out", str(tmp_path / "same.png")])
    assert code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "same.png")), still)
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255  # a mask of another size is resized too
    code = main(["image", "a cat", "--model", str(folder), "--init-image", init,
                 "--mask", _png(tmp_path / "mask.png", mask), "--out", str(tmp_path / "inpainted.png")])
    err = capsys.readouterr().err
    assert code == 0 and "--mask" in err and "resized to 8x8" in err
    out = np.asarray(Image.open(tmp_path / "inpainted.png"))
    assert np.array_equal(out[:, :4], still[:, :4]) and not np.array_equal(out[:, 4:], still[:, 4:])
    # --from needs the image again, and then redraws the same picture
    assert main(["image", "--from", str(tmp_path / "inpainted.png")]) == 2
    assert "give it again with --init-image" in capsys.readouterr().err
    code = main(["image", "--from", str(tmp_path / "inpainted.png"), "--init-image", init,
                 "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "again.png")])
    assert code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), out)


@pytest.mark.parametrize("flags, message", [
    (["--mask", "m.png"], "--mask edits an image: give it with --init-image"),
    (["--strength", "0.5"], "--strength edits an image"),
    (["--init-image", "missing.png"], "--init-image missing.png does not exist"),
    (["--init-image", "notes.txt"], "--init-image notes.txt is not a readable image"),
    (["--init-image", "still.png", "--strength", "2"], "--strength must be"),
])
def test_gen_image_edit_bad_input(tmp_path, capsys, monkeypatch, pixel_pipe, flags, message):
    monkeypatch.chdir(tmp_path)
    folder = pixel_pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "notes.txt").write_text("not an image")
    _png(tmp_path / "still.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["image", "a cat", "--model", str(folder), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "pipe", "still.png"]  # nothing written
