"""Video autoencoder for latent video diffusion: diffusers' `AutoencoderKLWan` (the Wan 2.1
video VAE, Wan Team 2025) under a small config, compressing time as well as space.

Every convolution is causal in time (padded only on the past side) and every norm is a
per-position RMS norm over channels, so nothing ever looks at a later frame: the first
frame is encoded alone, and an image is simply a one-frame clip.

    vae = models.create_video_vae(spatial_factor=4, temporal_factor=2)
    z = vae.encode(x)     # (B, 3, 1 + k*tf, H, W) in [-1, 1] -> (B, C, 1 + k, H/4, W/4), unit variance
    x = vae.decode(z)     # back to pixels, clamped to [-1, 1]

Frame counts. A clip has T = 1 + k * temporal_factor frames (k >= 0): frame 0 makes latent
frame 0 on its own, each following group of `temporal_factor` frames makes one more latent
frame. With temporal_factor 2 the valid counts are 1, 3, 5, 9, 17, ...; with 4: 1, 5, 9, 17.

Streaming. Encoding runs the encoder over frame 0, then over each group of
`temporal_factor` frames in turn, carrying the last two frames of every causal conv's
input in a feature cache (Wan's scheme); decoding runs the decoder one latent frame at a
time the same way. Peak activation memory therefore depends on H x W, not on the clip
length. `iter_decode` yields the pixels of each latent frame as soon as they are made, so a
long clip can be written out without holding its activations; `decode(batch_size=n)`
decodes n clips at a time. Both give the same numbers as a plain `decode`.

`encode` returns scaled latents (z - shift) * scale, `decode` undoes the scaling;
`fit_scaling` measures shift and scale on training clips (zero mean, unit variance).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from models.base import ConfiguredModule, register

SPATIAL_FACTORS = (1, 2, 4, 8, 16)
TEMPORAL_FACTORS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class VideoVAEConfig:
    spatial_factor: int = 4  # pixels per latent along each side
    temporal_factor: int = 2  # frames per latent frame after the first (T = 1 + k * temporal_factor)
    latent_channels: int = 4
    channels: tuple[int, ...] = (32, 64, 64)  # per level, one level per spatial halving + 1; multiples of channels[0]
    layers_per_block: int = 1  # residual blocks per encoder level (the decoder has one more)
    in_channels: int = 3
    scaling_factor: float = 1.0
    shift_factor: float = 0.0


def _levels(factor: int) -> int:
    return int(math.log2(factor)) + 1


def temporal_downsample(spatial_factor: int, temporal_factor: int) -> list[bool]:
    """Which spatial halvings also halve time: the deepest log2(temporal_factor) ones (as in Wan)."""
    halvings, temporal = _levels(spatial_factor) - 1, _levels(temporal_factor) - 1
    return [i >= halvings - temporal for i in range(halvings)]


@register
class VideoVAE(ConfiguredModule):
    """Causal 3D KL autoencoder: space / spatial_factor, time / temporal_factor (after frame 0)."""

    config_class = VideoVAEConfig

    def __init__(self, config: VideoVAEConfig):
        super().__init__(config)
        from diffusers import AutoencoderKLWan

        sf, tf, channels = config.spatial_factor, config.temporal_factor, tuple(config.channels)
        if sf not in SPATIAL_FACTORS:
            raise ValueError(f"spatial_factor must be one of {', '.join(map(str, SPATIAL_FACTORS))}, got {sf}")
        if tf not in TEMPORAL_FACTORS or tf > sf:
            raise ValueError(f"temporal_factor must be a power of two no larger than spatial_factor={sf} "
                             f"(time is halved only together with space), got {tf}")
        if len(channels) != _levels(sf):
            raise ValueError(f"a spatial_factor-{sf} video VAE needs {_levels(sf)} channel levels, "
                             f"got channels={channels}")
        base = channels[0]
        if any(c % base for c in channels) or (len(channels) > 1 and base % 2):
            raise ValueError(f"channels must be multiples of channels[0] (an even number), got {channels}")
        self.model = AutoencoderKLWan(
            base_dim=base, z_dim=config.latent_channels, dim_mult=[c // base for c in channels],
            num_res_blocks=config.layers_per_block, attn_scales=[],
            temperal_downsample=temporal_downsample(sf, tf),
            in_channels=config.in_channels, out_channels=config.in_channels,
            latents_mean=[0.0] * config.latent_channels, latents_std=[1.0] * config.latent_channels,
            scale_factor_temporal=tf, scale_factor_spatial=sf)
        # The streaming caches hold one entry per causal 3D conv (every Conv3d in Wan's encoder and decoder).
        self._encoder_convs = sum(isinstance(m, torch.nn.Conv3d) for m in self.model.encoder.modules())
        self._decoder_convs = sum(isinstance(m, torch.nn.Conv3d) for m in self.model.decoder.modules())

    @property
    def scale_factor(self) -> int:
        return self.config.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_frames(self, frames: int) -> int:
        """Latent frames for a clip of `frames` frames (1 + k * tf -> 1 + k)."""
        return 1 + (frames - 1) // self.temporal_factor

    def num_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames (1 + k -> 1 + k * tf)."""
        return 1 + (latent_frames - 1) * self.temporal_factor

    def _check(self, x: torch.Tensor) -> None:
        sf, tf, c = self.config.spatial_factor, self.temporal_factor, self.config.in_channels
        if x.dim() != 5 or x.shape[1] != c:
            hint = " (for images use x.unsqueeze(2): an image is a one-frame clip)" if x.dim() == 4 else ""
            raise ValueError(f"VideoVAE encodes clips (B, {c}, T, H, W), got {tuple(x.shape)}{hint}")
        t = x.shape[2]
        if t < 1 or (t - 1) % tf:
            below = 1 + max(t - 1, 0) // tf * tf
            raise ValueError(f"clip of shape {tuple(x.shape)} has {t} frames; the video VAE needs 1 + k*{tf} "
                             f"frames (temporal_factor {tf}): the nearest valid counts are {below} and {below + tf}")
        if x.shape[-1] % sf or x.shape[-2] % sf:
            raise ValueError(f"clip of shape {tuple(x.shape)}: frame size {tuple(x.shape[-2:])} is not divisible "
                             f"by the spatial factor {sf}; resize or crop to a multiple of {sf}")

    def posterior(self, x: torch.Tensor):
        """The diagonal Gaussian q(z | x), unscaled.

        The encoder sees frame 0 alone, then each group of temporal_factor frames, with
        the causal convs' feature cache carried between steps; gradients flow through it.
        (diffusers' public `AutoencoderKLWan.encode` steps by Wan's 4 frames, which gives
        other frame counts for temporal factors other than 4.)"""
        self._check(x)
        encoder, cache = self.model.encoder, [None] * self._encoder_convs
        steps = [x[:, :, :1]]  # frame 0 alone, then groups of temporal_factor frames
        if x.shape[2] > 1:
            steps += x[:, :, 1:].split(self.temporal_factor, dim=2)
        h = torch.cat([encoder(step, feat_cache=cache, feat_idx=[0]) for step in steps], dim=2)
        return DiagonalGaussian(self.model.quant_conv(h))  # moments (B, 2C, 1 + k, H/f, W/f)

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents (B, C, 1 + k, H/f, W/f): the posterior mean (or a sample), (z - shift) * scale."""
        dist = self.posterior(x)
        z = dist.sample(generator) if sample else dist.mean
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.dim() != 5 or z.shape[1] != self.latent_channels or z.shape[2] < 1:
            raise ValueError(f"VideoVAE decodes latents (B, {self.latent_channels}, t, h, w), got {tuple(z.shape)}")

    def _decode_steps(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """Unscaled latents -> pixels, one latent frame per step (1 frame, then tf frames each)."""
        decoder, cache = self.model.decoder, [None] * self._decoder_convs
        h = self.model.post_quant_conv(z)  # 1x1x1: per position
        for i in range(h.shape[2]):
            yield decoder(h[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], first_chunk=i == 0)

    def iter_decode(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """Decode scaled latents frame-group by frame-group: yields (B, 3, 1, H, W) for latent
        frame 0, then (B, 3, tf, H, W) for each later latent frame, clamped to [-1, 1].
        Concatenated along dim 2 they equal `decode(z)`."""
        self._check_latents(z)
        z = z / self.config.scaling_factor + self.config.shift_factor
        for frames in self._decode_steps(z):
            yield frames.clamp(-1, 1)

    def decode(self, z: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Pixels (B, 3, 1 + k*tf, H*f, W*f) in [-1, 1] from scaled latents (B, C, 1 + k, H, W).
        `batch_size` decodes that many clips at a time (less memory, same result)."""
        self._check_latents(z)
        if batch_size is not None and batch_size < z.shape[0]:
            return torch.cat([self.decode(part) for part in z.split(batch_size)])
        return torch.cat(list(self.iter_decode(z)), dim=2)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(reconstruction, KL per sample) with z sampled from the posterior (training).

        The reconstruction is not clamped, so the loss has a gradient everywhere; the KL
        is summed over channels, latent frames and positions."""
        dist = self.posterior(x)
        recon = torch.cat(list(self._decode_steps(dist.sample(generator))), dim=2)
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).flatten(1).sum(1)
        return recon, kl

    @torch.no_grad()
    def fit_scaling(self, clips: torch.Tensor, batch: int = 16) -> tuple[float, float]:
        """Measure shift = mean and scale = 1 / std of the posterior means over `clips`
        and store them in the config, so encoded latents have zero mean, unit variance."""
        zs = torch.cat([self.posterior(clips[i:i + batch]).mean.flatten() for i in range(0, len(clips), batch)])
        shift, scale = zs.mean().item(), 1.0 / zs.std().item()
        self.config = dataclasses.replace(self.config, scaling_factor=scale, shift_factor=shift)
        return scale, shift


class DiagonalGaussian:
    """N(mean, exp(logvar)) from encoder moments (B, 2C, ...): mean first, log-variance
    second along dim 1, the log-variance clamped to [-30, 20] (the KL-autoencoder convention,
    Rombach et al. 2022)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = self.std * self.std

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.mean.device if generator is None else generator.device  # drawn where the generator lives
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)


def create_video_vae(**overrides) -> VideoVAE:
    return VideoVAE(VideoVAEConfig(**overrides))
