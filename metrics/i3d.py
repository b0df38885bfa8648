"""The FVD feature network: the Kinetics-400 Inception-I3D as StyleGAN-V's TorchScript runs it, as a native module.

    from metrics.i3d import I3D, load_i3d
    i3d = load_i3d()                        # converted weights, found like every metrics weight; never downloads
    i3d(clips)                              # (B, 3, T, H, W) in [-1, 1] (or uint8), T >= 9 -> (B, 400) logits

The network is I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"): Inception-v1
inflated to 3D, as DeepMind's kinetics-i3d `i3d.py` builds it and tf.hub's `i3d-kinetics-400/1`
serves it to the original FVD code (Unterthiner et al. 2018). StyleGAN-V (Skorokhodov et al.
2022) ported that graph to TorchScript, `i3d_torchscript.pt` (registry name `i3d-fvd`), and
every FVD reported in the StyleGAN-V protocol comes from it. Here it is plain PyTorch:

  Unit3D          Conv3d (TF 'SAME' padding, no bias) -> BatchNorm (eps 1e-3) -> ReLU
  InceptionBlock  four branches concatenated: 1x1x1 | 1x1x1, 3x3x3 | 1x1x1, 3x3x3 | 3x3x3 max pool, 1x1x1
  I3D             Conv3d_1a_7x7 (stride 2), MaxPool3d_2a (1x3x3, stride 1x2x2), Conv3d_2b_1x1,
                  Conv3d_2c_3x3, MaxPool3d_3a (1x3x3, stride 1x2x2), Mixed_3b, Mixed_3c,
                  MaxPool3d_4a (3x3x3, stride 2), Mixed_4b..4f, MaxPool3d_5a (2x2x2, stride 2),
                  Mixed_5b, Mixed_5c, average pool 2x7x7 (stride 1, VALID), Logits (1x1x1 conv with
                  bias) -> squeeze space -> mean over time.

TF 'SAME' (convolutions and max pools): the output has ceil(n / s) positions along a side of
length n, and the input is padded by max((ceil(n / s) - 1) s + k - n, 0) in total, the smaller
half before. Max pools pad with -inf (TF ignores padding); after a ReLU that is the same as
the zeros that PyTorch ports pad with. The i3dpt port that StyleGAN-V's file derives from
(hassony2/kinetics_i3d_pytorch) pads its pools by a fixed k - s with ceil_mode instead: the
same windows whenever the pooled lengths are even (16 or 128 frames at 224), shifted by one
when a length reaching MaxPool3d_4a is odd (e.g. 18 frames); `scripts/convert_i3d.py` reports
which the archive does. The protocol's clip lengths are unaffected.

The protocol around the network (StyleGAN-V `detector(x, rescale=True, resize=True,
return_features=True)` on uint8 clips):

  rescale   uint8 u -> u / 255 * 2 - 1 (floats in [-1, 1] are taken as they are)
  resize    every frame to 224 x 224, bilinear, align_corners=False, no antialias (F.interpolate)
  features  the 400 pre-softmax logits averaged over time: tf.hub's "RGB/inception_i3d/Mean:0"

T >= 9 frames: fewer leave nothing for the 2-frame average pool (FVD clips are 16 frames).
The TorchScript file is not read here (loading it runs its code): `scripts/convert_i3d.py`
converts it once into a safetensors state dict with this module's names, checking outputs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .weights import WeightsNotFoundError, candidates, is_torchscript, load_state_dict, resolve, spec

INPUT_SIZE = 224  # frames are resized to INPUT_SIZE x INPUT_SIZE
MIN_FRAMES = 9  # ceil(T / 8) >= 2 frames must reach the 2x7x7 average pool
BN_EPS = 1e-3  # Sonnet's BatchNorm default, which the TF graph was trained with
CONVERTED_FILENAME = "i3d_torchscript.safetensors"  # what scripts/convert_i3d.py writes next to the TorchScript
CONVERT_COMMAND = "python scripts/convert_i3d.py"

# Output channels of each Inception block's six convolutions (DeepMind's i3d.py):
# branch_0 1x1 | branch_1a 1x1, branch_1b 3x3 | branch_2a 1x1, branch_2b 3x3 | branch_3b 1x1 after the pool
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one side of length `size`: ceil(size / stride) outputs."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
             value: float = 0.0) -> torch.Tensor:
    """(B, C, T, H, W) padded so that a VALID conv or pool with `kernel`, `stride` gives TF 'SAME' output."""
    (t0, t1), (h0, h1), (w0, w1) = (same_padding(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride))
    if t0 == t1 == h0 == h1 == w0 == w1 == 0:
        return x
    return F.pad(x, (w0, w1, h0, h1, t0, t1), value=value)


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """tf.nn.max_pool3d(padding='SAME'): padded positions never win (padded with -inf)."""
    return F.max_pool3d(pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding -> BatchNorm (eps 1e-3) -> ReLU: every layer of the I3D but the last.

    `logits=True` is the classifier: the convolution has a bias, and there is no BatchNorm or ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(pad_same(x, self.kernel, self.stride))  # (B, C_out, ceil(T/s), ceil(H/s), ceil(W/s))
        return x if self.bn is None else F.relu(self.bn(x))


class InceptionBlock(nn.Module):
    """I3D's Mixed block: four branches over the same input, concatenated along channels.

    `channels`: (branch_0, branch_1a, branch_1b, branch_2a, branch_2b, branch_3b) output channels.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.branch_0 = Unit3D(in_channels, c0)
        self.branch_1a = Unit3D(in_channels, c1a)
        self.branch_1b = Unit3D(c1a, c1b, kernel=(3, 3, 3))
        self.branch_2a = Unit3D(in_channels, c2a)
        self.branch_2b = Unit3D(c2a, c2b, kernel=(3, 3, 3))
        self.branch_3b = Unit3D(in_channels, c3b)  # after a 3x3x3 stride-1 max pool (no weights)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T, H, W) -> (B, out_channels, T, H, W)
        return torch.cat([
            self.branch_0(x),
            self.branch_1b(self.branch_1a(x)),
            self.branch_2b(self.branch_2a(x)),
            self.branch_3b(max_pool_same(x, (3, 3, 3), (1, 1, 1))),
        ], dim=1)


class I3D(nn.Module):
    """Inception-I3D, RGB stream: clips -> (B, num_classes) logits averaged over time (FVD's features).

    num_classes: 400 for Kinetics-400 (the FVD network).
    width: multiplies every channel count (1.0 is the published network; smaller ones are for tests).
    A frozen feature extractor: no gradients, always in eval mode (batch norm uses its running statistics).
    """

    def __init__(self, num_classes: int = 400, width: float = 1.0):
        super().__init__()
        if num_classes < 1 or width <= 0:
            raise ValueError(f"I3D needs num_classes >= 1 and width > 0, got num_classes={num_classes}, width={width}")
        self.num_classes = self.num_features = num_classes
        self.width = width
        c = self.channels
        self.Conv3d_1a_7x7 = Unit3D(3, c(64), kernel=(7, 7, 7), stride=(2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(c(64), c(64))
        self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), kernel=(3, 3, 3))
        in_channels = c(192)
        for name, channels in MIXED.items():
            block = InceptionBlock(in_channels, tuple(c(n) for n in channels))
            self.add_module(name, block)
            in_channels = block.out_channels
        self.Logits = Unit3D(in_channels, num_classes, logits=True)  # TF's Logits/Conv3d_0c_1x1
        self.requires_grad_(False)
        self.eval()

    def channels(self, n: int) -> int:
        """The published channel count `n` scaled by `width`."""
        return max(1, round(n * self.width))

    def train(self, mode: bool = True) -> I3D:
        return super().train(False)  # batch norm stays in inference mode

    def preprocess(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) uint8, or floats in [-1, 1] -> (B, 3, T, 224, 224) in [-1, 1], on the network's
        device and dtype: uint8 u -> u / 255 * 2 - 1, then each frame resized bilinearly (align_corners=False,
        no antialias), computed in float32."""
        if clips.dim() != 5 or clips.shape[1] != 3:
            raise ValueError(f"the I3D wants RGB clips (B, 3, T, H, W), got shape {tuple(clips.shape)}; "
                             "(B, T, 3, H, W) clips need .permute(0, 2, 1, 3, 4), gray ones .repeat(1, 3, 1, 1, 1)")
        if clips.shape[2] < MIN_FRAMES:
            raise ValueError(f"the I3D needs clips of at least {MIN_FRAMES} frames (its temporal pooling leaves "
                             f"nothing of fewer), got {clips.shape[2]}; FVD uses 16-frame clips")
        weight = self.Logits.conv.weight
        x = clips.to(weight.device)
        if x.dtype == torch.uint8:
            x = x.float() / 255 * 2 - 1
        else:
            x = x.float()
            lo, hi = x.aminmax()
            if lo < -1.001 or hi > 1.001:  # the original FVD code's assertion
                raise ValueError(f"float clips must be in [-1, 1], got values in [{lo.item():.3g}, {hi.item():.3g}]; "
                                 "pass uint8 clips, or x / 127.5 - 1 for floats in [0, 255], or 2 x - 1 for [0, 1]")
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            channels, frames = x.shape[1], x.shape[2]
            x = F.interpolate(x.flatten(1, 2), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",  # frames as channels
                              align_corners=False, antialias=False).unflatten(1, (channels, frames))
        return x.to(weight.dtype)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network on preprocessed clips (B, 3, T, 224, 224) in [-1, 1] -> (B, num_classes), pre-softmax.
        Shapes below for T = 16 at width 1."""
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"I3D.logits wants {INPUT_SIZE}x{INPUT_SIZE} frames, got {tuple(x.shape[-2:])}; "
                             "call the module itself (or preprocess) to resize")
        x = self.Conv3d_1a_7x7(x)                         # (B, 64, 8, 112, 112)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))        # (B, 64, 8, 56, 56)      MaxPool3d_2a_3x3
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))     # (B, 192, 8, 56, 56)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))        # (B, 192, 8, 28, 28)     MaxPool3d_3a_3x3
        x = self.Mixed_3c(self.Mixed_3b(x))               # (B, 480, 8, 28, 28)
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))        # (B, 480, 4, 14, 14)     MaxPool3d_4a_3x3
        x = self.Mixed_4c(self.Mixed_4b(x))               # (B, 512, 4, 14, 14)
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(x)))  # (B, 832, 4, 14, 14)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))        # (B, 832, 2, 7, 7)       MaxPool3d_5a_2x2
        x = self.Mixed_5c(self.Mixed_5b(x))               # (B, 1024, 2, 7, 7)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)          # (B, 1024, 1, 1, 1)      VALID: T' = ceil(T/8) - 1
        x = self.Logits(x)                                # (B, num_classes, 1, 1, 1)
        return x.squeeze(4).squeeze(3).mean(dim=2)        # (B, num_classes)        tf.hub's inception_i3d/Mean

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) uint8 or floats in [-1, 1], T >= 9 -> (B, num_classes) logits averaged over time."""
        return self.logits(self.preprocess(clips))


def i3d_from_state_dict(state: dict[str, torch.Tensor]) -> I3D:
    """An I3D holding `state` (this module's names), its width and class count read off the shapes.
    Missing `num_batches_tracked` counters (unused in eval) are filled in; anything else is an error."""
    first, last = state.get("Conv3d_1a_7x7.conv.weight"), state.get("Logits.conv.weight")
    if first is None or last is None:
        raise ValueError(f"not an I3D state dict with this module's names (no Conv3d_1a_7x7.conv.weight or "
                         f"Logits.conv.weight among {len(state)} tensors, e.g. {sorted(state)[:3]}); convert the "
                         f"upstream file with `{CONVERT_COMMAND} <i3d_torchscript.pt>`")
    model = I3D(num_classes=last.shape[0], width=first.shape[0] / 64)
    counters = {k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    missing, unexpected = model.load_state_dict({**counters, **state}, strict=False)
    mismatched = [k for k, v in model.state_dict().items() if k in state and v.shape != state[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"state dict does not fit the I3D: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shapes differ for {mismatched[:5]}; convert the upstream file with `{CONVERT_COMMAND}`")
    return model


def converted_candidates() -> list[tuple[str, Path | None]]:
    """Where `load_i3d` looks for the converted file: the places `resolve("i3d-fvd")` looks for the
    TorchScript ($GEN_WEIGHTS, the torch hub cache, each also in an `i3d-fvd/` subfolder)."""
    return candidates(dataclasses.replace(spec("i3d-fvd"), filename=CONVERTED_FILENAME, format="safetensors"))


def _convert_hint(torchscript: Path | str) -> str:
    return (f"convert it once, on a machine you trust (this runs the archive's code): `{CONVERT_COMMAND} "
            f"{torchscript}` writes {CONVERTED_FILENAME} next to it, where load_i3d finds it")


def i3d_weights(path: str | os.PathLike | None = None, allow_download: bool = False) -> Path:
    """The converted I3D file: `path` (the file, or a folder holding CONVERTED_FILENAME), else the first
    CONVERTED_FILENAME in `converted_candidates()`. When there is none, one error saying what to do: the
    upstream TorchScript is looked up with `resolve("i3d-fvd", allow_download=...)` (downloaded only when
    allowed) and named in the conversion command."""
    upstream = spec("i3d-fvd").filename
    if path is not None:
        given = Path(path).expanduser()
        if given.is_dir():
            if (given / CONVERTED_FILENAME).is_file():
                given = given / CONVERTED_FILENAME
            elif (given / upstream).is_file():
                given = given / upstream
            else:
                raise WeightsNotFoundError(f"no {CONVERTED_FILENAME} (converted I3D) in {given}; put the upstream "
                                           f"{upstream} there and {_convert_hint(given / upstream)}")
        if not given.is_file():
            raise WeightsNotFoundError(f"i3d: no file at {given} (given as path=)")
        if is_torchscript(given):
            raise ValueError(f"{given} is the upstream TorchScript archive, which is never loaded here; "
                             + _convert_hint(given))
        return given
    places = converted_candidates()
    for _, file in places:
        if file is not None and file.is_file():
            return file
    looked = "\n".join(f"  - {where}: {file}" for where, file in places if file is not None)
    try:
        torchscript = resolve("i3d-fvd", allow_download=allow_download)
    except WeightsNotFoundError as e:
        raise WeightsNotFoundError(f"no converted I3D ({CONVERTED_FILENAME}) in:\n{looked}\nand no upstream file "
                                   f"to convert it from: {e}\nThen {_convert_hint('<i3d_torchscript.pt>')}") from None
    raise WeightsNotFoundError(f"no converted I3D ({CONVERTED_FILENAME}) in:\n{looked}\nThe upstream TorchScript is "
                               f"at {torchscript}: {_convert_hint(torchscript)}")


def load_i3d(path: str | os.PathLike | None = None, allow_download: bool = False,
             device: torch.device | str = "cpu") -> I3D:
    """The FVD I3D with its converted weights (see `i3d_weights` for where they are found), in eval mode.

    `allow_download=True` fetches the upstream TorchScript when it is missing, to be converted with
    scripts/convert_i3d.py; nothing downloaded is ever loaded as code.
    """
    return i3d_from_state_dict(load_state_dict(i3d_weights(path, allow_download))).to(device)


__all__ = ["I3D", "InceptionBlock", "Unit3D", "load_i3d", "i3d_weights", "i3d_from_state_dict", "same_padding",
           "pad_same", "max_pool_same", "converted_candidates", "INPUT_SIZE", "MIN_FRAMES", "CONVERTED_FILENAME",
           "MIXED"]
