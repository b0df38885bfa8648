"""Image autoencoder for latent diffusion: diffusers' AutoencoderKL under a small config.

We use diffusers' `AutoencoderKL` class itself (Kingma & Welling 2014; the Stable
Diffusion VAE, Rombach et al. 2022), so a pretrained SD VAE folder loads into the same
code path; this module only derives its block layout from a spatial `factor`, keeps the
latent scaling in our JSON config, and adds the toolkit's conventions:

    vae = models.create_vae(factor=4, latent_channels=4)
    z = vae.encode(x)          # (B, C, H, W) in [-1, 1] -> (B, 4, H/4, W/4), unit variance
    x = vae.decode(z)          # back to pixels (tiled with `tile=` for large images)

`encode` returns scaled latents (z - shift) * scale, `decode` undoes the scaling; the
scale and shift are measured on training data (`fit_scaling`) so latents have zero
mean and unit variance, as the denoisers assume.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from models.base import ConfiguredModule, register

FACTORS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class ImageVAEConfig:
    factor: int = 4  # pixels per latent along each side
    latent_channels: int = 4
    channels: tuple[int, ...] | None = None  # per level (default: 64, 128, ... one level per halving + 1)
    layers_per_block: int = 1
    in_channels: int = 3
    norm_groups: int = 32
    mid_attention: bool = True
    scaling_factor: float = 1.0
    shift_factor: float = 0.0


def default_channels(factor: int, base: int = 64) -> tuple[int, ...]:
    levels = int(math.log2(factor)) + 1
    return tuple(min(base * 2**i, 4 * base) for i in range(levels))


@register
class ImageVAE(ConfiguredModule):
    """KL autoencoder with spatial factor 2^(levels-1); latents scaled to unit variance."""

    config_class = ImageVAEConfig

    def __init__(self, config: ImageVAEConfig):
        super().__init__(config)
        from diffusers import AutoencoderKL

        if config.factor not in FACTORS:
            raise ValueError(f"VAE factor must be one of {', '.join(map(str, FACTORS))}, got {config.factor}")
        channels = tuple(config.channels or default_channels(config.factor))
        if len(channels) != int(math.log2(config.factor)) + 1:
            raise ValueError(f"a factor-{config.factor} VAE needs {int(math.log2(config.factor)) + 1} channel "
                             f"levels, got channels={channels}")
        self.model = AutoencoderKL(
            in_channels=config.in_channels, out_channels=config.in_channels,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=channels, layers_per_block=config.layers_per_block,
            latent_channels=config.latent_channels, norm_num_groups=config.norm_groups,
            mid_block_add_attention=config.mid_attention, scaling_factor=config.scaling_factor,
            shift_factor=config.shift_factor)

    @property
    def scale_factor(self) -> int:
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def image_channels(self) -> int:
        return self.config.in_channels

    def _check(self, x: torch.Tensor) -> None:
        f = self.config.factor
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"ImageVAE encodes images (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the VAE factor {f}; "
                             f"resize or crop to a multiple of {f}")

    def posterior(self, x: torch.Tensor):
        """The diagonal Gaussian q(z | x) (diffusers' DiagonalGaussianDistribution), unscaled."""
        self._check(x)
        return self.model.encode(x).latent_dist

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents: the posterior mean (or a sample), (z - shift) * scale."""
        dist = self.posterior(x)
        z = dist.sample(generator) if sample else dist.mean
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def decode(self, z: torch.Tensor, tile: int | None = None, overlap: float = 0.25) -> torch.Tensor:
        """Pixels from scaled latents. With `tile` (pixels), decode in tiles (see `decode_tiled`)."""
        if z.dim() != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"ImageVAE decodes latents (B, {self.config.latent_channels}, h, w), got {tuple(z.shape)}")
        z = z / self.config.scaling_factor + self.config.shift_factor
        if tile is None:
            return self.model.decode(z).sample
        with global_group_norm(self.model.decoder, lambda: self.model.decode(_shrunk(z, tile // self.config.factor))):
            return decode_tiled(lambda part: self.model.decode(part).sample, z, self.config.factor, tile, overlap)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(reconstruction, KL per sample) with z sampled from the posterior (training)."""
        dist = self.posterior(x)
        recon = self.model.decode(dist.sample(generator)).sample
        return recon, dist.kl()

    @torch.no_grad()
    def fit_scaling(self, images: torch.Tensor, batch: int = 64) -> tuple[float, float]:
        """Measure shift = mean and scale = 1 / std of the posterior means over `images`
        and store them in the config, so encoded latents have zero mean, unit variance."""
        import dataclasses

        zs = torch.cat([self.posterior(images[i:i + batch]).mean for i in range(0, len(images), batch)])
        shift, scale = zs.mean().item(), 1.0 / zs.std().item()
        self.config = dataclasses.replace(self.config, scaling_factor=scale, shift_factor=shift)
        return scale, shift


def _shrunk(z: torch.Tensor, tile: int) -> torch.Tensor:
    """z area-downsampled by powers of two until it is at most two tiles across."""
    while max(z.shape[-2:]) > 2 * tile and min(z.shape[-2:]) >= 2:
        z = torch.nn.functional.avg_pool2d(z, 2)
    return z


@contextmanager
def global_group_norm(decoder: nn.Module, probe):
    """Inside the block, every GroupNorm of `decoder` normalises with statistics measured
    by `probe()` (a decode of the whole latent, downsampled) instead of each tile's own.

    Per-tile statistics shift a tile's colours with its content (a tile of sky alone
    normalises differently from the whole picture): the seams of naive tiled decoding.
    """
    norms = [m for m in decoder.modules() if isinstance(m, nn.GroupNorm)]
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def measure(module, inputs, output):
        x = inputs[0].float().reshape(inputs[0].shape[0], module.num_groups, -1)
        stats[id(module)] = (x.mean(-1), x.var(-1, unbiased=False))

    def apply(module, inputs, output):
        x = inputs[0]
        mean, var = stats[id(module)]
        shape = (x.shape[0], module.num_groups, -1)
        y = (x.float().reshape(shape) - mean[..., None]) / torch.sqrt(var[..., None] + module.eps)
        y = y.reshape(x.shape).to(x.dtype)
        if module.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y * module.weight.view(shape) + module.bias.view(shape)
        return y

    hooks = [m.register_forward_hook(measure) for m in norms]
    try:
        probe()
    finally:
        for h in hooks:
            h.remove()
    hooks = [m.register_forward_hook(apply) for m in norms]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def _ramp(length: int, fade: int, left: bool, right: bool) -> torch.Tensor:
    """Blend weights along one side of a tile: rising over `fade` pixels where a neighbour
    tile overlaps (left / right), flat elsewhere."""
    w = torch.ones(length)
    if fade > 0:
        up = (torch.arange(fade) + 0.5) / fade
        if left:
            w[:fade] = torch.minimum(w[:fade], up)
        if right:
            w[-fade:] = torch.minimum(w[-fade:], up.flip(0))
    return w


def decode_tiled(decode, z: torch.Tensor, factor: int, tile: int, overlap: float = 0.25) -> torch.Tensor:
    """Decode latents (B, C, h, w) in overlapping tiles of `tile` pixels and blend them.

    Each tile is decoded with a margin of extra latents around it whose pixels are thrown
    away (a decoder's border pixels see zero padding: the usual source of seams), and
    neighbouring tiles overlap by `overlap` of a tile, cross-faded with linear ramps.
    Memory grows with the tile, not the image.
    """
    t = max(tile // factor, 1)  # tile core, in latents
    o = min(max(int(round(t * overlap)), 1), t - 1) if t > 1 else 0
    margin = max(t // 4, 2)
    step = t - o
    b, _, h, w = z.shape
    starts = lambda n: sorted({min(i, max(n - t, 0)) for i in range(0, max(n - o, 1), step)})  # noqa: E731
    out = weight = None
    for y in starts(h):
        for x in starts(w):
            ys, ye = max(y - margin, 0), min(y + t + margin, h)
            xs, xe = max(x - margin, 0), min(x + t + margin, w)
            pixels = decode(z[:, :, ys:ye, xs:xe])
            ty, tx = min(t, h - y), min(t, w - x)
            core = pixels[:, :, (y - ys) * factor:(y - ys + ty) * factor, (x - xs) * factor:(x - xs + tx) * factor]
            if out is None:
                out = z.new_zeros(b, pixels.shape[1], h * factor, w * factor)
                weight = z.new_zeros(1, 1, h * factor, w * factor)
            fade = o * factor
            wy = _ramp(ty * factor, fade, y > 0, y + ty < h).to(z)
            wx = _ramp(tx * factor, fade, x > 0, x + tx < w).to(z)
            wt = wy[:, None] * wx[None, :]
            out[:, :, y * factor:(y + ty) * factor, x * factor:(x + tx) * factor] += core * wt
            weight[:, :, y * factor:(y + ty) * factor, x * factor:(x + tx) * factor] += wt
    return out / weight


def create_vae(**overrides) -> ImageVAE:
    return ImageVAE(ImageVAEConfig(**overrides))
