"""Video VAE: shapes, agreement with diffusers' Wan VAE, causality in time, images as
one-frame clips, checkpoints, errors, latent scaling, and a short overfit."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import models
from models.base import config_from_dict, config_to_dict
from models.video_vae import DiagonalGaussian, VideoVAE, VideoVAEConfig, create_video_vae, temporal_downsample

TINY = dict(channels=(16, 32, 32), latent_channels=4)  # spatial 4x


pytestmark = pytest.mark.usefixtures("one_thread")


def _vae(temporal_factor=2, seed=0, **overrides):
    torch.manual_seed(seed)
    return create_video_vae(temporal_factor=temporal_factor, **{**TINY, **overrides}).eval()


def _clips(batch=2, frames=5, size=16, seed=0):
    """Smooth random clips in [-1, 1] (low-resolution noise, upsampled in space and time)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, 3, 3, size // 4, size // 4, generator=g)
    return F.interpolate(low, size=(frames, size, size), mode="trilinear", align_corners=True).tanh()


@pytest.mark.parametrize("tf", [2, 4])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_shapes_for_one_plus_k_temporal_factor_frames(tf, k):
    vae = _vae(tf)
    x = _clips(batch=2, frames=1 + k * tf, size=16)
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape == (2, 4, 1 + k, 4, 4)
        assert vae.latent_frames(x.shape[2]) == 1 + k and vae.num_frames(1 + k) == x.shape[2]
        assert vae.decode(z).shape == x.shape
        recon, kl = vae(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and kl.shape == (2,) and (kl > 0).all()
    assert (vae.scale_factor, vae.temporal_factor, vae.latent_channels) == (4, tf, 4)


def test_temporal_halvings_are_the_deepest_levels():
    assert temporal_downsample(4, 1) == [False, False]
    assert temporal_downsample(4, 2) == [False, True]
    assert temporal_downsample(8, 4) == [False, True, True]


def test_matches_diffusers_wan_vae_at_its_native_temporal_factor():
    # AutoencoderKLWan.encode walks frames in groups of 4 and decodes one latent frame at
    # a time; at temporal_factor 4 our own loop over its encoder/decoder must agree.
    vae = _vae(4)
    x = _clips(batch=2, frames=9)
    with torch.no_grad():
        z = vae.encode(x)
        ref = vae.model.encode(x).latent_dist.mean
        torch.testing.assert_close(z, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(vae.decode(z), vae.model.decode(z).sample, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tf", [2, 4])
def test_encoder_is_causal_in_time(tf):
    vae = _vae(tf)
    x = _clips(batch=2, frames=1 + 2 * tf)
    with torch.no_grad():
        z = vae.encode(x)
        first_alone = vae.encode(x[:, :, :1])  # frame 0 as a one-frame clip
        prefix = vae.encode(x[:, :, :1 + tf])  # the first two latent frames' worth
        changed = x.clone()
        changed[:, :, 1:] = -changed[:, :, 1:]  # later frames replaced
        z_changed = vae.encode(changed)
    torch.testing.assert_close(z[:, :, :1], first_alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(z[:, :, :2], prefix, rtol=0, atol=1e-6)
    torch.testing.assert_close(z_changed[:, :, :1], z[:, :, :1], rtol=0, atol=1e-6)
    assert (z_changed[:, :, 1:] - z[:, :, 1:]).abs().max() > 1e-3  # later frames do matter


def test_gradients_flow_forward_in_time_only():
    # Through the feature cache the last latent frame sees frame 0; frame 0's latent sees nothing later.
    vae = _vae(2)
    x = _clips(batch=1, frames=5).requires_grad_()
    z = vae.encode(x)
    (grad_last,) = torch.autograd.grad(z[:, :, -1].sum(), x, retain_graph=True)
    (grad_first,) = torch.autograd.grad(z[:, :, 0].sum(), x)
    assert grad_last[:, :, 0].abs().sum() > 0
    assert grad_first[:, :, 1:].abs().sum() == 0 and grad_first[:, :, 0].abs().sum() > 0


def test_decoder_is_causal_in_time():
    vae = _vae(2)
    z = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = vae.decode(z)
        torch.testing.assert_close(vae.decode(z[:, :, :1]), full[:, :, :1], rtol=0, atol=1e-6)
        torch.testing.assert_close(vae.decode(z[:, :, :2]), full[:, :, :3], rtol=0, atol=1e-6)


def test_an_image_is_a_one_frame_clip():
    vae = _vae(2)
    image = _clips(batch=3, frames=1)[:, :, 0]  # (B, 3, H, W)
    with torch.no_grad():
        z = vae.encode(image.unsqueeze(2))
        assert z.shape == (3, 4, 1, 4, 4)
        assert vae.decode(z).shape == (3, 3, 1, 16, 16)
    with pytest.raises(ValueError, match=r"unsqueeze\(2\)"):
        vae.encode(image)


def test_streamed_and_sliced_decoding_equal_the_plain_decode():
    vae = _vae(2)
    z = torch.randn(3, 4, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = vae.decode(z)
        steps = list(vae.iter_decode(z))
        sliced = vae.decode(z, batch_size=1)
    assert [s.shape[2] for s in steps] == [1, 2, 2, 2]
    torch.testing.assert_close(torch.cat(steps, dim=2), plain, rtol=0, atol=0)
    torch.testing.assert_close(sliced, plain, rtol=0, atol=1e-5)
    assert plain.min() >= -1 and plain.max() <= 1


def test_save_and_load_bit_for_bit(tmp_path):
    vae = _vae(2)
    vae.fit_scaling(_clips(batch=2, frames=5))
    vae.save_pretrained(tmp_path / "vae")
    loaded = models.load_pretrained(tmp_path / "vae")
    assert isinstance(loaded, VideoVAE) and loaded.config == vae.config
    for (name, a), (_, b) in zip(vae.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = _clips(batch=1, frames=3, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded.eval().encode(x), vae.encode(x))


def test_config_round_trips_through_json():
    config = VideoVAEConfig(spatial_factor=8, temporal_factor=4, latent_channels=8, channels=(16, 32, 64, 64),
                            layers_per_block=2, scaling_factor=0.7, shift_factor=-0.1)
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(VideoVAEConfig, data) == config
    assert VideoVAE(config).scale_factor == 8


@pytest.mark.parametrize("frames, message", [(4, "4 frames.*nearest valid counts are 3 and 5"),
                                             (6, "6 frames.*nearest valid counts are 5 and 7"),
                                             (0, "0 frames.*nearest valid counts are 1 and 3")])
def test_bad_frame_counts_are_named(frames, message):
    vae = _vae(2)
    with pytest.raises(ValueError, match=message):
        vae.encode(torch.zeros(1, 3, frames, 16, 16))


def test_bad_sizes_and_configs_are_named():
    vae = _vae(4)
    with pytest.raises(ValueError, match=r"6 frames.*1 \+ k\*4.*5 and 9"):
        vae.encode(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(ValueError, match=r"\(18, 16\) is not divisible by the spatial factor 4"):
        vae.encode(torch.zeros(1, 3, 5, 18, 16))
    with pytest.raises(ValueError, match="decodes latents"):
        vae.decode(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="temporal_factor must be"):
        create_video_vae(temporal_factor=3)
    with pytest.raises(ValueError, match="no larger than spatial_factor=2"):
        create_video_vae(spatial_factor=2, temporal_factor=4, channels=(16, 32))
    with pytest.raises(ValueError, match="needs 3 channel levels"):
        create_video_vae(channels=(16, 32))


def test_fit_scaling_gives_zero_mean_unit_variance_latents():
    vae = _vae(2)
    x = _clips(batch=4, frames=5, seed=3)
    with torch.no_grad():
        before = vae.decode(vae.encode(x))
        raw = vae.encode(x)
    scale, shift = vae.fit_scaling(x, batch=3)
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (scale, shift)
    with torch.no_grad():
        z = vae.encode(x)
        after = vae.decode(z)
    assert abs(raw.mean().item()) > 1e-3 or abs(raw.std().item() - 1) > 1e-2  # scaling had work to do
    assert abs(z.mean().item()) < 1e-5 and abs(z.std().item() - 1) < 1e-5
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)  # decode undoes the scaling


def _moving_squares():
    """Two 5-frame 16x16 clips, each an 8x8 coloured square moving one pixel per frame."""
    x = torch.full((2, 3, 5, 16, 16), -1.0)
    x[0, 2] = -0.2
    for t in range(5):
        x[0, :, t, 2:10, 1 + t:9 + t] = torch.tensor([1.0, -0.5, -1.0])[:, None, None]
        x[1, :, t, 1 + t:9 + t, 6:14] = torch.tensor([-1.0, 1.0, 0.3])[:, None, None]
    return x


def test_short_overfit_learns_the_clips():
    vae = _vae(2).train()
    x = _moving_squares()
    mean_colour = (x - x.mean((2, 3, 4), keepdim=True)).pow(2).mean().item()  # a constant-per-clip guess
    with torch.no_grad():
        start = (vae.decode(vae.encode(x)) - x).pow(2).mean().item()
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        recon, kl = vae(x, generator=g)
        loss = F.mse_loss(recon, x) + 1e-6 * kl.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        recon = vae.decode(vae.encode(x))
        image = vae.decode(vae.encode(x[:, :, :1]))  # frame 0 alone, as an image
    end = F.mse_loss(recon, x).item()
    assert end < start / 15, (start, end)
    assert end < mean_colour / 5, (mean_colour, end)  # the squares themselves are reconstructed
    assert F.mse_loss(image, x[:, :, :1]).item() < mean_colour / 5


def test_the_posterior_is_diffusers_diagonal_gaussian():
    """models.video_vae.DiagonalGaussian against diffusers' own DiagonalGaussianDistribution
    (a module diffusers does not export, read here as the reference only)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    moments = torch.randn(2, 8, 3, 4, 4) * 20  # log-variances past both clamps
    ours, ref = DiagonalGaussian(moments), DiagonalGaussianDistribution(moments)
    for name in ("mean", "logvar", "std", "var"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    torch.testing.assert_close(ours.sample(torch.Generator().manual_seed(3)),
                               ref.sample(torch.Generator().manual_seed(3)))


def test_the_streaming_caches_count_every_causal_conv():
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    vae = models.create_video_vae(spatial_factor=4, temporal_factor=2)
    for part, count in ((vae.model.encoder, vae._encoder_convs), (vae.model.decoder, vae._decoder_convs)):
        assert count == sum(isinstance(m, WanCausalConv3d) for m in part.modules()) > 0
