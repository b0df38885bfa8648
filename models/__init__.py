"""Denoisers and the modules around them: torch nn.Modules only (never imports gen).

    import models
    net = models.create("dit-tiny", in_channels=4, text_dim=128)   # overrides allowed
    models.list_models()            # [(name, parameters), ...]
    net.save_pretrained(path); models.load_pretrained(path)
"""

from __future__ import annotations

from models.base import ConfiguredModule, load_pretrained, read_config, register  # noqa: F401
from models.dit import DiT, DiTConfig
from models.text import TextEncoder, TextEncoderConfig
from models.unet import UNet, UNetConfig
from models.vae import ImageVAE, ImageVAEConfig, create_vae
from models.video_vae import VideoVAE, VideoVAEConfig, create_video_vae

# name -> (class, config kwargs). Tiny presets train in CI in seconds; the others are
# the sizes the shipped defaults use.
PRESETS: dict[str, tuple[type, dict]] = {
    "unet-tiny": (UNet, dict(in_channels=3, sample_size=16, channels=(32, 64), num_res_blocks=1,
                             attention_levels=(1,), num_heads=2, text_dim=64, pooled_dim=64)),
    "dit-tiny": (DiT, dict(in_channels=3, sample_size=16, patch_size=2, hidden_size=64, depth=2,
                           num_heads=2, text_dim=64, pooled_dim=64)),
    "video-unet-tiny": (UNet, dict(in_channels=3, sample_size=16, channels=(32, 64), num_res_blocks=1,
                                   attention_levels=(1,), num_heads=2, text_dim=64, pooled_dim=64,
                                   video=True, frames=8)),
    "video-dit-tiny": (DiT, dict(in_channels=3, sample_size=16, patch_size=2, hidden_size=64, depth=2,
                                 num_heads=2, text_dim=64, pooled_dim=64, video=True, frames=8, tubelet=2)),
    "dit-xs/2": (DiT, dict(in_channels=3, sample_size=32, patch_size=2, hidden_size=192, depth=8,
                           num_heads=6, text_dim=128, pooled_dim=128)),
    "dit-s/2": (DiT, dict(in_channels=4, sample_size=16, patch_size=2, hidden_size=384, depth=12,
                          num_heads=6, text_dim=256, pooled_dim=256)),
    "dit-b/2": (DiT, dict(in_channels=4, sample_size=32, patch_size=2, hidden_size=768, depth=12,
                          num_heads=12, text_dim=512, pooled_dim=512)),
    "unet-s": (UNet, dict(in_channels=3, sample_size=32, channels=(64, 128, 256), num_res_blocks=2,
                          attention_levels=(1, 2), num_heads=4, text_dim=256, pooled_dim=256)),
    # super-resolution stages: fully convolutional (no attention), the upsampled low-res image
    # concatenated to the input and the noise-augmentation level embedded; no text
    "sr-unet-tiny": (UNet, dict(in_channels=3, sample_size=32, channels=(16, 32), num_res_blocks=1,
                                attention_levels=(), concat_keys=("low_res",), noise_level=True)),
    "sr-unet-s": (UNet, dict(in_channels=3, sample_size=64, channels=(32, 64, 128), num_res_blocks=2,
                             attention_levels=(), concat_keys=("low_res",), noise_level=True)),
    "video-dit-s": (DiT, dict(in_channels=4, sample_size=16, patch_size=2, hidden_size=384, depth=12,
                              num_heads=6, text_dim=256, pooled_dim=256, video=True, frames=16, tubelet=2)),
    "video-unet-s": (UNet, dict(in_channels=3, sample_size=32, channels=(64, 128, 256), num_res_blocks=2,
                                attention_levels=(1, 2), num_heads=4, text_dim=256, pooled_dim=256,
                                video=True, frames=16)),
}


def create(name: str, **overrides) -> ConfiguredModule:
    """A fresh model from preset `name`, with config fields overridden by keyword."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    cls, kwargs = PRESETS[name]
    return cls.from_config({**kwargs, **overrides})


def video_from_image(image_model: ConfiguredModule, frames: int = 16, **overrides) -> ConfiguredModule:
    """A video denoiser initialised from a trained image one (Make-A-Video, Latte, SVD).

    The video twin (same class and config, `video=True`, one-frame tubelets) holds every
    image weight under the same name, so they are copied over; the temporal layers it adds
    start at zero, the identity: before training, the video model is the image model
    applied to each frame. `overrides` set other config fields (e.g. temporal_mlp_ratio).
    """
    config = image_model.config
    if getattr(config, "video", False):
        raise ValueError(f"video_from_image needs an image model, got a video {type(image_model).__name__}")
    if overrides.get("tubelet", 1) != 1:
        raise ValueError(f"video_from_image keeps one-frame tubelets (the image patch embedding), "
                         f"got tubelet={overrides['tubelet']}")
    video, missing = _copy_into(image_model, {"video": True, "frames": frames, **overrides})
    spatial_missing = [k for k in missing if "temporal" not in k]
    if spatial_missing:
        raise ValueError(f"the video twin does not hold the image weights (missing {spatial_missing[:3]}): "
                         "were overrides changing the spatial layers given?")
    return video


def extend(model: ConfiguredModule, **overrides) -> ConfiguredModule:
    """`model` with config fields changed that only add layers (e.g. a video DiT's
    `temporal_conv`): every weight is copied and the new layers start at their
    initialisation, which is the identity for residual branches, so the result computes
    what `model` did. A change that alters an existing layer is a ValueError."""
    return _copy_into(model, overrides)[0]


def _copy_into(model: ConfiguredModule, overrides: dict) -> tuple[ConfiguredModule, list[str]]:
    """(model of the same class with `overrides` on its config, holding every weight of
    `model`; the names of its weights `model` did not have)."""
    import dataclasses

    new = type(model).from_config({**dataclasses.asdict(model.config), **overrides})
    new.to(next(model.parameters()).device)
    state = model.state_dict()
    old_keys, new_keys = tuple(getattr(model.config, "concat_keys", ())), tuple(getattr(new.config, "concat_keys", ()))
    if new_keys != old_keys and new_keys[:len(old_keys)] == old_keys:
        state = _widen_inputs(state, new.state_dict())
    try:
        missing, unexpected = new.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{overrides} changes existing layers of the {type(model).__name__}: {err}") from None
    if unexpected:
        raise ValueError(f"{overrides} removes layers of the {type(model).__name__} (e.g. {unexpected[:3]})")
    return new, missing


def _widen_inputs(state: dict, target: dict) -> dict:
    """`state` with each weight that reads the input channels (the patch embedding, the
    first convolution) widened to `target`'s channel count: the old channels first, as
    before, and zeros for the concatenated inputs appended after them, so the widened
    model computes what the old one did until it learns to use them (as inpainting models
    are started from text-to-image ones)."""
    import torch

    widened = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape or value.dim() < 2 or want.dim() != value.dim():
            continue
        if want.shape[0] == value.shape[0] and want.shape[2:] == value.shape[2:] and want.shape[1] > value.shape[1]:
            grown = torch.zeros(want.shape, dtype=value.dtype, device=value.device)
            grown[:, :value.shape[1]] = value
            widened[key] = grown
    return widened


def list_models() -> list[tuple[str, int]]:
    """(preset name, parameter count) for every preset (built on the meta device: no memory)."""
    import torch

    with torch.device("meta"):
        return [(name, create(name).num_parameters()) for name in PRESETS]


def native_input(config, batch: int = 1, text_tokens: int = 32, device=None) -> tuple:
    """(x, t, cond) at a config's native size: a probe for FLOP counts and benchmarks."""
    import torch

    s = config.sample_size
    shape = (batch, config.in_channels, config.frames, s, s) if config.video else (batch, config.in_channels, s, s)
    x = torch.randn(shape, device=device)
    cond = {}
    if config.text_dim:
        cond["text"] = torch.randn(batch, text_tokens, config.text_dim, device=device)
    if config.pooled_dim:
        cond["pooled"] = torch.randn(batch, config.pooled_dim, device=device)
    if config.num_classes:
        cond["label"] = torch.zeros(batch, dtype=torch.long, device=device)
    if config.noise_level:
        cond["noise_level"] = torch.zeros(batch, dtype=torch.long, device=device)
    for key in config.concat_keys:  # low_res at a quarter of the side (a 4x stage), frames like x
        if key == "low_res":
            cond[key] = torch.randn(*shape[:-2], max(1, s // 4), max(1, s // 4), device=device)
        elif key == "frames":
            cond[key] = torch.randn(shape, device=device)
        else:  # frame_mask
            cond[key] = torch.ones(batch, config.frames, device=device)
    return x, torch.zeros(batch, dtype=torch.long, device=device), cond


def summary() -> list[dict]:
    """Every preset: class, parameters, native input shape and forward GFLOPs (one
    sample, 32 text tokens), measured by torch's FLOP counter on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    for name in PRESETS:
        with torch.device("meta"):
            net = create(name)
            x, t, cond = native_input(net.config)
            with FlopCounterMode(display=False) as counter:
                net(x, t, cond)
        rows.append({"name": name, "class": type(net).__name__, "parameters": net.num_parameters(),
                     "input": list(x.shape), "gflops": counter.get_total_flops() / 1e9})
    return rows


__all__ = ["video_from_image", "extend", "summary", "native_input", "create", "list_models", "load_pretrained",
           "read_config", "PRESETS", "DiT", "DiTConfig", "UNet", "UNetConfig", "TextEncoder", "TextEncoderConfig",
           "ImageVAE", "ImageVAEConfig", "create_vae", "VideoVAE", "VideoVAEConfig", "create_video_vae",
           "ConfiguredModule", "register"]
