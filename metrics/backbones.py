"""Standard feature networks for FID, KID and IS, built from their reference code with weights read locally.

    from metrics.backbones import fid_inception
    net = fid_inception()                   # FID Inception: finds the weights (metrics.weights), never downloads
    net(images)                             # (B, 2048) pool features; images (B, 3, H, W) in [-1, 1] or uint8
    net.features(images)                    # {"pool": (B, 2048), "logits_unbiased": (B, 1008), "logits": (B, 1008)}
    fid_inception(output="logits_unbiased") # a module returning the Inception Score's input

The network is the FID Inception of Heusel et al. 2017 (the TF `inception-2015-12-05` graph):
torchvision's Inception3 with 1008 classes and no aux head, its Mixed_5b..5d, 6b..6e, 7b and 7c
replaced by pytorch-fid's `FIDInceptionA/C/E_1/E_2` (average pools without padding in the
count, a max pool in the last block), exactly as `pytorch_fid.inception.fid_inception_v3`
builds it, but loaded from a local file with `torch.load(weights_only=True)` instead of
pytorch-fid's `load_state_dict_from_url`. pytorch-fid's file and torch-fidelity's
(`weights-inception-2015-12-05-6726825d.pth`) both load: they have the same keys.

The preprocessing decides which published numbers yours are comparable with (`protocol`):

  "pytorch-fid"     images in [0, 1] (uint8 / 255, as ToTensor gives; floats (x + 1) / 2),
                    bilinear resize to 299x299 (align_corners=False, no antialias), then 2x - 1.
  "torchmetrics"    uint8 (floats: (x + 1) / 2 * 255 truncated, like torchmetrics' normalize=True),
                    bilinear resize with antialias, then (x - 128) / 128: torchmetrics' default.
  "torch-fidelity"  as torchmetrics but TF1's bilinear resize (torch-fidelity's own, imported from it).

Give images to `torchmetrics.image.FrechetInceptionDistance(feature=net)` as uint8 (or floats in
[-1, 1]): torchmetrics hands a custom module the images unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .weights import WeightsNotFoundError, load_state_dict, resolve, spec

PROTOCOLS = ("pytorch-fid", "torchmetrics", "torch-fidelity")
OUTPUTS = {"pool": 2048, "logits_unbiased": 1008, "logits": 1008}
INPUT_SIZE = 299


def fid_inception_architecture() -> nn.Module:
    """pytorch-fid's FID Inception, random and unloaded: `pytorch_fid.inception.fid_inception_v3` without
    its download. State dict keys are torchvision Inception3's (the upstream weight files' keys)."""
    try:
        from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
    except ImportError as e:
        raise ModuleNotFoundError("the FID Inception is built from pytorch-fid's blocks: `pip install pytorch-fid`",
                                  name="pytorch_fid") from e
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class FIDInceptionV3(nn.Module):
    """The FID Inception as a frozen feature extractor: images -> pool features or logits.

    protocol: the preprocessing, one of PROTOCOLS (module docstring).
    output: what `forward` returns: "pool" (B, 2048) for FID/KID, "logits_unbiased" (B, 1008)
        (pool @ fc.weight.T, torch-fidelity's Inception Score input) or "logits" (with the bias).
    `num_features` is the output width (torchmetrics reads it). Always in eval mode.
    """

    def __init__(self, protocol: str = "pytorch-fid", output: str = "pool"):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {tuple(OUTPUTS)}, got {output!r}")
        self.protocol, self.output, self.num_features = protocol, output, OUTPUTS[output]
        self.net = fid_inception_architecture()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FIDInceptionV3:
        return super().train(False)  # batch norm stays in inference mode (e.g. inside a torchmetrics Metric)

    def load_upstream(self, state: dict[str, torch.Tensor]) -> FIDInceptionV3:
        """Load an upstream FID Inception state dict (pytorch-fid's or torch-fidelity's keys), strictly."""
        self.net.load_state_dict(state)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 or floats in [-1, 1] -> (B, 3, 299, 299) in [-1, 1], per `protocol`, computed
        in float32 and cast to the network's dtype, on the network's device."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the FID Inception wants RGB images (B, 3, H, W), got {tuple(images.shape)}")
        images = images.to(self.net.fc.weight.device)
        size = (INPUT_SIZE, INPUT_SIZE)
        if self.protocol == "pytorch-fid":
            x = images.float() / 255 if images.dtype == torch.uint8 else (images.float() + 1) / 2  # [0, 1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            return (2 * x - 1).to(self.net.fc.weight.dtype)
        if images.dtype != torch.uint8:
            images = ((images.float() + 1) / 2 * 255).clamp(0, 255).byte()  # torchmetrics: (x * 255).byte()
        x = images.float()
        if self.protocol == "torchmetrics":
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        else:
            try:
                from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
            except ImportError as e:
                raise ImportError("protocol='torch-fidelity' uses torch-fidelity's TF1 resize: "
                                  "`pip install torch-fidelity`, or use protocol='torchmetrics'") from e
            x = interpolate_bilinear_2d_like_tensorflow1x(x, size=size, align_corners=False)
        return ((x - 128) / 128).to(self.net.fc.weight.dtype)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """All outputs from one pass: {"pool": (B, 2048), "logits_unbiased": (B, 1008), "logits": (B, 1008)}."""
        n = self.net
        x = self.preprocess(images)                              # (B, 3, 299, 299)
        x = n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)             # (B, 64, 73, 73)
        x = n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x))                  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)             # (B, 192, 35, 35)
        x = n.Mixed_5d(n.Mixed_5c(n.Mixed_5b(x)))                # (B, 288, 35, 35)
        x = n.Mixed_6a(x)                                        # (B, 768, 17, 17)
        x = n.Mixed_6e(n.Mixed_6d(n.Mixed_6c(n.Mixed_6b(x))))    # (B, 768, 17, 17)
        x = n.Mixed_7c(n.Mixed_7b(n.Mixed_7a(x)))                # (B, 2048, 8, 8)
        pool = F.adaptive_avg_pool2d(x, output_size=1).flatten(1)  # (B, 2048)
        logits_unbiased = pool.mm(n.fc.weight.T)                 # (B, 1008)
        return {"pool": pool, "logits_unbiased": logits_unbiased, "logits": logits_unbiased + n.fc.bias}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)[self.output]


def fid_inception_weights(weights: str | os.PathLike | None = None, allow_download: bool = False,
                          verify_hash: bool = True) -> Path:
    """The FID Inception file: `weights` if given, else pytorch-fid's file, else torch-fidelity's copy,
    wherever `metrics.weights.resolve` finds them. One WeightsNotFoundError when neither is here."""
    if weights is not None:
        return resolve("inception-fid", path=weights, verify_hash=verify_hash)
    try:
        return resolve("inception-fid", verify_hash=verify_hash)
    except WeightsNotFoundError as first:
        try:
            return resolve("inception-fid-torch-fidelity", verify_hash=verify_hash)
        except WeightsNotFoundError:
            pass
        if allow_download:
            return resolve("inception-fid", allow_download=True, verify_hash=verify_hash)
        other = spec("inception-fid-torch-fidelity").filename
        raise WeightsNotFoundError(f"{first}\ntorch-fidelity's copy, {other}, would do as well; it is not in those "
                                   f"places either") from None


def fid_inception(weights: str | os.PathLike | None = None, protocol: str = "pytorch-fid", output: str = "pool",
                  device: torch.device | str = "cpu", allow_download: bool = False,
                  verify_hash: bool = True) -> FIDInceptionV3:
    """The FID Inception with its upstream weights (see `fid_inception_weights` for where they are found;
    `weights` may name the file or its folder), read with torch.load(weights_only=True), in eval mode."""
    path = fid_inception_weights(weights, allow_download=allow_download, verify_hash=verify_hash)
    model = FIDInceptionV3(protocol=protocol, output=output)
    return model.load_upstream(load_state_dict(path)).to(device)


__all__ = ["FIDInceptionV3", "fid_inception", "fid_inception_weights", "fid_inception_architecture",
           "PROTOCOLS", "OUTPUTS"]
