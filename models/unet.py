"""U-Net denoiser (Ho et al. 2020; Dhariwal & Nichol 2021; Rombach et al. 2022), for
images and video.

conv_in -> per level: residual blocks (+ attention with cross-attention to text at the
chosen levels), downsample -> middle -> per level up: residual blocks on the skip
concatenation (+ attention), upsample -> norm, SiLU, zero-initialised conv_out.
Video: the same spatial layers run on each frame (frames folded into the batch), each
residual block followed by a temporal convolution and each attention block by a
temporal attention (Make-A-Video / VDM factorised space-time), all zero-initialised,
so any frame count works and the untrained temporal layers are the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.base import ConfiguredModule, register
from models.blocks import (Downsample, ResBlock, SpatialTransformer, TemporalAttention, TemporalConv, Upsample,
                           group_norm, zero_)
from models.conditioning import Conditioner, concat_channels, concat_inputs
from models.denoiser import check_inputs


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int | None = None  # default: in_channels (x2 with learn_sigma)
    learn_sigma: bool = False
    sample_size: int = 32  # native side, for docs and FLOP counts
    channels: tuple[int, ...] = (64, 128, 256)  # per level
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2)  # level indices with attention
    num_heads: int = 4
    dropout: float = 0.0
    text_dim: int | None = None
    pooled_dim: int | None = None
    num_classes: int | None = None
    video: bool = False
    frames: int = 16  # native frame count (video)
    concat_keys: tuple[str, ...] = ()
    noise_level: bool = False


class TemporalAttention2D(TemporalAttention):
    """TemporalAttention on (B*T, C, H, W) feature maps."""

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        seq = rearrange(x, "(b t) c h w -> (b h w) t c", t=frames)
        return rearrange(super().forward(seq), "(b h w) t c -> (b t) c h w", h=h, w=w)


class UNetStage(nn.Module):
    """One step of the U-Net: a residual block, its temporal conv (video), attention and
    its temporal attention where the level has them, then a resampler. Named parts keep
    image and video checkpoints compatible: a video U-Net holds every image weight."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, cfg: "UNetConfig", attention: bool,
                 context_dim: int | None, resample: nn.Module | None = None):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, cfg.dropout) if in_ch else None
        self.temporal_conv = TemporalConv(out_ch) if cfg.video and in_ch else None
        self.attn = SpatialTransformer(out_ch, cfg.num_heads, context_dim) if attention else None
        self.temporal_attn = TemporalAttention2D(out_ch, cfg.num_heads) if attention and cfg.video else None
        self.resample = resample

    def forward(self, h, emb, context, mask, frames):
        if self.res is not None:
            h = self.res(h, emb)
        if self.temporal_conv is not None and frames > 1:  # one-frame clips (images) skip time
            h = self.temporal_conv(h, frames)
        if self.attn is not None:
            h = self.attn(h, context, mask)
        if self.temporal_attn is not None and frames > 1:
            h = self.temporal_attn(h, frames)
        return self.resample(h) if self.resample is not None else h


@register
class UNet(ConfiguredModule):
    """model(x_t, t, cond) -> prediction for images (B, C, H, W) or clips (B, C, T, H, W)."""

    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        cfg = config
        self.out_channels = (cfg.out_channels or cfg.in_channels) * (2 if cfg.learn_sigma else 1)
        emb_dim = 4 * cfg.channels[0]
        self.conditioner = Conditioner(emb_dim, cfg.text_dim, cfg.pooled_dim, cfg.num_classes, cfg.noise_level,
                                       context_dim=cfg.channels[-1] if cfg.text_dim else None)
        context_dim = cfg.channels[-1] if cfg.text_dim else None
        self.conv_in = nn.Conv2d(cfg.in_channels + concat_channels(cfg.concat_keys, cfg.in_channels),
                                 cfg.channels[0], 3, padding=1)

        def stage(in_ch: int, out_ch: int, level: int, resample=None) -> UNetStage:
            return UNetStage(in_ch, out_ch, emb_dim, cfg, level in cfg.attention_levels, context_dim, resample)

        self.down = nn.ModuleList()
        skips = [cfg.channels[0]]
        ch = cfg.channels[0]
        for level, width in enumerate(cfg.channels):
            for _ in range(cfg.num_res_blocks):
                self.down.append(stage(ch, width, level))
                ch = width
                skips.append(ch)
            if level < len(cfg.channels) - 1:
                self.down.append(stage(0, ch, -1, Downsample(ch)))
                skips.append(ch)
        deepest = len(cfg.channels) - 1
        self.mid = nn.ModuleList([stage(ch, ch, deepest), stage(ch, ch, -1)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(cfg.channels))):
            for i in range(cfg.num_res_blocks + 1):
                up = Upsample(width) if level > 0 and i == cfg.num_res_blocks else None
                self.up.append(stage(ch + skips.pop(), width, level, up))
                ch = width
        self.norm_out = group_norm(ch)
        self.conv_out = zero_(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    @property
    def cond_keys(self) -> tuple[str, ...]:
        return self.conditioner.keys + tuple(self.config.concat_keys)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        cfg = self.config
        cond = check_inputs("UNet", x, t, cond, cfg.in_channels, (5,) if cfg.video else (4,), self.cond_keys,
                            {"text": cfg.text_dim, "pooled": cfg.pooled_dim})
        factor = 2 ** (len(cfg.channels) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet with {len(cfg.channels)} levels needs height and width divisible by {factor}, "
                             f"got x of shape {tuple(x.shape)}")
        if cfg.concat_keys:
            x = concat_inputs(x, cond, cfg.concat_keys)
        b = x.shape[0]
        frames = x.shape[2] if cfg.video else 1
        if cfg.video:
            x = rearrange(x, "b c t h w -> (b t) c h w")
        emb, context, mask = self.conditioner(t, cond)
        emb = emb.repeat_interleave(frames, 0)
        if context is not None:
            context, mask = context.repeat_interleave(frames, 0), mask.repeat_interleave(frames, 0)

        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb, context, mask, frames)
            hs.append(h)
        for stage in self.mid:
            h = stage(h, emb, context, mask, frames)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb, context, mask, frames)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return rearrange(out, "(b t) c h w -> b c t h w", b=b) if cfg.video else out
