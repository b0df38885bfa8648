"""DiT: a Diffusion Transformer (Peebles & Xie 2023), for images and video.

patchify -> N blocks with adaLN-Zero on (timestep + pooled text or class) and
cross-attention to text tokens (PixArt-alpha) -> final adaLN layer -> unpatchify.
Video: 3-D tubelets (ViViT) and either factorised attention, a spatial block (within
each frame) then a temporal block (across frames) at every depth (Latte, variant 1),
or full 3-D attention over all tokens. A factorised temporal block attends over the frames
at one position (`temporal_mode="position"`), or over every token of the clip after
average-pooling each frame's token grid (`"clip"`): a token can then read where things
were in other frames, which is what moving them takes; its residual is upsampled back.
`temporal_conv` adds a motion path after each temporal block: a depthwise 3x3x3
convolution over frames and the token grid, on channels gated by the conditioning, so a
small shift of a token's content from one frame to the next is one kernel tap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from models.base import ConfiguredModule, register
from models.blocks import Attention, FeedForward, PatchEmbed, modulate, sincos_1d, sincos_2d, unpatchify, zero_
from models.conditioning import Conditioner, concat_channels, concat_inputs
from models.denoiser import check_inputs

ATTENTION_MODES = ("factorized", "full")
TEMPORAL_MODES = ("position", "clip")


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 4
    out_channels: int | None = None  # default: in_channels (x2 with learn_sigma)
    learn_sigma: bool = False
    sample_size: int = 32  # native side, for docs and FLOP counts
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    temporal_mlp_ratio: float | None = None  # video, factorised: the temporal blocks' (default mlp_ratio)
    temporal_cross_attention: bool = False  # video, factorised: temporal blocks also read the text tokens
    temporal_mode: str = "position"  # video, factorised: position (frames at one position) | clip (all tokens)
    temporal_pool: int = 2  # temporal_mode "clip": token grid pooled by this factor per side
    temporal_conv: int = 0  # video, factorised: channels of a space-time conv after each temporal block (0: none)
    text_dim: int | None = None  # token embeddings to cross-attend to
    pooled_dim: int | None = None  # pooled text embedding added to the timestep
    num_classes: int | None = None
    video: bool = False
    frames: int = 16  # native frame count (video)
    tubelet: int = 1  # frames per 3-D patch
    attention: str = "factorized"  # video: factorized | full
    concat_keys: tuple[str, ...] = ()  # cond inputs appended as channels
    noise_level: bool = False  # embed cond["noise_level"] (cascade noise augmentation)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: shift/scale/gate from c for attention and MLP, an
    unmodulated cross-attention between them; every branch starts at zero."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if context_dim else None
        self.cross = Attention(dim, heads, context_dim=dim, zero_out=True) if context_dim else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_ratio)
        self.ada = zero_(nn.Linear(dim, 6 * dim))

    def forward(self, x, c, context=None, mask=None, pos=None):
        # x: (N, L, D) tokens in G groups of N // G consecutive rows (the frames or the
        # positions of one clip); c: (G, D), context: (G, M, D), mask: (G, M), one per group;
        # pos: (L, D) added to the attention input only.
        n, length, dim = x.shape
        if n % c.shape[0]:
            raise ValueError(f"{n} token rows do not split into {c.shape[0]} conditioning groups")
        mods = self.ada(nn.functional.silu(c)).repeat_interleave(n // c.shape[0], 0)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods.chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        if pos is not None:
            h = h + pos
        x = x + gate1[:, None] * self.attn(h)
        if self.cross is not None and context is not None:
            # Each query reads the context alone, so a group's rows are one sequence here:
            # the keys and values are computed once per clip, not once per row.
            queries = self.norm_cross(x).reshape(context.shape[0], -1, dim)
            x = x + self.cross(queries, context, mask).reshape(n, length, dim)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class MotionConv(nn.Module):
    """A residual space-time convolution on a clip's tokens: LayerNorm, a linear map to
    `width` channels scaled and shifted by the conditioning (timestep + pooled text, so
    the prompt picks which channels carry), SiLU, a depthwise convolution over (frames,
    rows, columns), and a linear map back that starts at zero (identity at init)."""

    def __init__(self, dim: int, width: int, kernel: int = 3):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.proj_in = nn.Linear(dim, width)
        self.ada = zero_(nn.Linear(dim, 2 * width))
        self.conv = nn.Conv3d(width, width, kernel, padding=kernel // 2, groups=width)
        self.proj_out = zero_(nn.Linear(width, dim))

    def forward(self, h, c, grid: tuple[int, int]):
        # h: ((B T), N, D) tokens of B clips on a rows x cols grid; c: (B, D)
        b = c.shape[0]
        shift, scale = self.ada(nn.functional.silu(c)).chunk(2, dim=-1)
        u = rearrange(self.proj_in(self.norm(h)), "(b t) (y x) w -> b t y x w", b=b, y=grid[0])
        u = nn.functional.silu(u * (1 + scale[:, None, None, None]) + shift[:, None, None, None])
        # contiguous: on CPU with bf16, torch 2.14's depthwise weight gradient from a
        # channels-last-ordered input is wrong on small clips (checked against float32)
        u = self.conv(rearrange(u, "b t y x w -> b w t y x").contiguous())
        return h + self.proj_out(rearrange(u, "b w t y x -> (b t) (y x) w"))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = zero_(nn.Linear(dim, 2 * dim))
        self.linear = zero_(nn.Linear(dim, out_dim))

    def forward(self, x, c):
        shift, scale = self.ada(nn.functional.silu(c)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


@register
class DiT(ConfiguredModule):
    """model(x_t, t, cond) -> prediction for images (B, C, H, W) or clips (B, C, T, H, W)."""

    config_class = DiTConfig

    def __init__(self, config: DiTConfig):
        super().__init__(config)
        cfg = config
        if cfg.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {cfg.attention!r}")
        if cfg.temporal_mode not in TEMPORAL_MODES:
            raise ValueError(f"temporal_mode must be one of {', '.join(TEMPORAL_MODES)}, got {cfg.temporal_mode!r}")
        if cfg.temporal_conv < 0:
            raise ValueError(f"temporal_conv is a channel count (0 for none), got {cfg.temporal_conv}")
        if cfg.temporal_pool < 1:
            raise ValueError(f"temporal_pool must be a positive integer, got {cfg.temporal_pool}")
        if cfg.tubelet > 1 and not cfg.video:
            raise ValueError(f"tubelet={cfg.tubelet} needs video=True")
        dim = cfg.hidden_size
        self.out_channels = (cfg.out_channels or cfg.in_channels) * (2 if cfg.learn_sigma else 1)
        self.patch = PatchEmbed(cfg.in_channels + concat_channels(cfg.concat_keys, cfg.in_channels), dim,
                                cfg.patch_size, cfg.tubelet)
        self.conditioner = Conditioner(dim, cfg.text_dim, cfg.pooled_dim, cfg.num_classes, cfg.noise_level)
        context = dim if cfg.text_dim else None
        self.blocks = nn.ModuleList(DiTBlock(dim, cfg.num_heads, cfg.mlp_ratio, context) for _ in range(cfg.depth))
        factorized = cfg.video and cfg.attention == "factorized"
        if cfg.temporal_conv and not factorized:
            raise ValueError(f"temporal_conv={cfg.temporal_conv} needs a video DiT with factorised attention "
                             f"(video=True, attention='factorized'), got video={cfg.video}, "
                             f"attention={cfg.attention!r}")
        temporal_ratio = cfg.mlp_ratio if cfg.temporal_mlp_ratio is None else cfg.temporal_mlp_ratio
        temporal_context = context if cfg.temporal_cross_attention else None
        self.temporal_blocks = nn.ModuleList(DiTBlock(dim, cfg.num_heads, temporal_ratio, temporal_context)
                                             for _ in range(cfg.depth if factorized else 0))
        self.temporal_convs = nn.ModuleList(MotionConv(dim, cfg.temporal_conv)
                                            for _ in range(cfg.depth if cfg.temporal_conv else 0))
        self.final = FinalLayer(dim, cfg.patch_size**2 * cfg.tubelet * self.out_channels)
        self._init_weights()

    def _init_weights(self):
        # DiT: xavier-uniform linears, patch embedding like a linear; then adaLN-Zero.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch.proj.bias)
        for emb in (self.conditioner.t_embed, self.conditioner.noise_level):
            if emb is not None:
                for layer in (emb.mlp[0], emb.mlp[2]):
                    nn.init.normal_(layer.weight, std=0.02)
        for block in [*self.blocks, *self.temporal_blocks]:
            zero_(block.ada)
            if block.cross is not None:
                zero_(block.cross.to_out)
        for motion in self.temporal_convs:
            zero_(motion.ada)
            zero_(motion.proj_out)
        zero_(self.final.ada)
        zero_(self.final.linear)

    @property
    def size_multiple(self) -> int:
        """Heights and widths this model takes are multiples of this: the patch size, times
        the pooling of clip-wide temporal blocks."""
        cfg = self.config
        clip_pool = cfg.video and cfg.attention == "factorized" and cfg.temporal_mode == "clip"
        return cfg.patch_size * (cfg.temporal_pool if clip_pool else 1)

    @property
    def cond_keys(self) -> tuple[str, ...]:
        return self.conditioner.keys + tuple(self.config.concat_keys)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        cfg = self.config
        cond = check_inputs("DiT", x, t, cond, cfg.in_channels, (5,) if cfg.video else (4,), self.cond_keys,
                            {"text": cfg.text_dim, "pooled": cfg.pooled_dim})
        height, width = x.shape[-2:]
        p = cfg.patch_size
        if height % p or width % p:
            raise ValueError(f"DiT with patch size {p} needs height and width divisible by {p}, "
                             f"got x of shape {tuple(x.shape)}")
        if cfg.video and x.shape[2] % cfg.tubelet:
            raise ValueError(f"DiT with tubelet depth {cfg.tubelet} needs a frame count divisible by "
                             f"{cfg.tubelet}, got x of shape {tuple(x.shape)}")
        if cfg.concat_keys:
            x = concat_inputs(x, cond, cfg.concat_keys)

        tokens = self.patch(x)  # (B, T', N, D)
        b, frames, n, dim = tokens.shape
        pos = sincos_2d(height // p, width // p, dim, tokens.device).to(tokens.dtype)
        tokens = tokens + pos
        c, context, mask = self.conditioner(t, cond)  # (B, D), (B, L, D), (B, L)
        time_pos = sincos_1d(torch.arange(frames, device=x.device, dtype=torch.float32), dim).to(tokens.dtype)

        if not cfg.video or cfg.attention == "factorized":
            # Spatial blocks see each frame alone; temporal blocks each position over time
            # (skipped for one-frame clips: images in joint image-video training).
            h, grid = rearrange(tokens, "b t n d -> (b t) n d"), (height // p, width // p)
            for i, block in enumerate(self.blocks):
                h = block(h, c, context, mask)
                if self.temporal_blocks and frames > 1:
                    h = self.temporal(self.temporal_blocks[i], h, b, grid, c,
                                      context if cfg.temporal_cross_attention else None, mask, time_pos)
                    if self.temporal_convs:
                        h = self.temporal_convs[i](h, c, grid)
            out = rearrange(self.final(h, c.repeat_interleave(frames, 0)), "(b t) n e -> b t n e", b=b)
        else:  # full 3-D attention over all T' x N tokens
            h = rearrange(tokens + time_pos[None, :, None], "b t n d -> b (t n) d")
            for block in self.blocks:
                h = block(h, c, context, mask)
            out = rearrange(self.final(h, c), "b (t n) e -> b t n e", t=frames)
        return unpatchify(out, self.out_channels, p, cfg.tubelet, height, width, cfg.video)

    def temporal(self, block: DiTBlock, h, b: int, grid: tuple[int, int], c, context, mask, time_pos):
        """One temporal block on tokens h ((B T), N, D) of B clips on a token grid."""
        if self.config.temporal_mode == "position":
            h = rearrange(h, "(b t) n d -> (b n) t d", b=b)
            h = block(h, c, context, mask, pos=time_pos)
            return rearrange(h, "(b n) t d -> (b t) n d", b=b)
        k, (rows, cols) = self.config.temporal_pool, grid
        if rows % k or cols % k:
            raise ValueError(f"temporal_pool {k} needs a token grid divisible by {k}, got {rows}x{cols} "
                             f"tokens; use a size divisible by {k * self.config.patch_size}")
        frames = h.shape[0] // b
        g = nn.functional.avg_pool2d(rearrange(h, "bt (y x) d -> bt d y x", y=rows), k)
        g = rearrange(g, "(b t) d y x -> b (t y x) d", b=b)
        space = sincos_2d(rows // k, cols // k, h.shape[-1], h.device)
        pos = (time_pos[:, None] + space[None].to(time_pos.dtype)).flatten(0, 1)  # (T N', D)
        delta = block(g, c, context, mask, pos=pos) - g  # exactly zero at init
        delta = rearrange(delta, "b (t y x) d -> (b t) d y x", t=frames, y=rows // k)
        delta = nn.functional.interpolate(delta, scale_factor=k, mode="nearest") if k > 1 else delta
        return h + rearrange(delta, "bt d y x -> bt (y x) d")
