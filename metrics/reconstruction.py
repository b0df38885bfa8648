"""Reconstruction quality of an autoencoder: PSNR per sample, and LPIPS when its weights are here.

    from metrics.reconstruction import psnr, psnr_over_batches, summarize_psnr, lpips_network
    psnr(x, x_hat)                        # (B,) dB, images or clips in [-1, 1]
    values = psnr_over_batches((x, vae.decode(vae.encode(x))) for x in batches)
    summarize_psnr(values)                # {"mean": ..., "p5": ..., "min": ..., "n": ...}

PSNR is the standard 10 log10(R^2 / MSE) with R the data range (2 for [-1, 1]), one value
per sample (mean over every other axis), accumulated in float64. Identical samples have
MSE 0 and PSNR +inf.

LPIPS (Zhang et al. 2018) is torchmetrics' implementation (the v0.1 linear heads packaged with
torchmetrics) with the AlexNet backbone, whose ImageNet weights, torchvision's
`alexnet-owt-7be5be79.pth`, are found by `metrics.weights.resolve("alexnet")` (`$GEN_WEIGHTS`,
then the torch hub cache `$TORCH_HOME/hub/checkpoints`, ...). Nothing is downloaded here.

Hash rule: a file found in a cache under the upstream name claims to be the upstream file,
so it must match the SHA-256 prefix in that name (`WeightsHashError` otherwise). A file the
caller names (`weights=`) is the caller's: used as given, unchecked (a features-only copy,
a converted file, or test weights are all fine); pass `verify_hash=True` to check it too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

LPIPS_MIN_SIDE = 64  # AlexNet's strided stem needs room: smaller inputs are upsampled to this


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample, in dB: 10 log10(R^2 / MSE(x_b, y_b)).

    `x`, `y`: (B, ...) tensors of the same shape (images (B, C, H, W) or clips
    (B, C, T, H, W)), in a range of width `data_range` (2.0 for [-1, 1]). The squared error
    is averaged over every axis but the first in float64. Returns (B,) float64; +inf where
    x_b == y_b exactly.
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr needs tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() < 2:
        raise ValueError(f"psnr wants a batch (B, ...) with at least one value per sample, got {tuple(x.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive (2.0 for [-1, 1]), got {data_range}")
    err = (x.detach().to(torch.float64) - y.detach().to(torch.float64)).flatten(1)  # (B, N)
    mse = err.square().mean(dim=1)  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse 0 -> +inf


def psnr_over_batches(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], data_range: float = 2.0) -> torch.Tensor:
    """Per-sample PSNR over any number of (original, reconstruction) batches, concatenated (N,) on the CPU."""
    values = [psnr(x, y, data_range).cpu() for x, y in pairs]
    if not values:
        raise ValueError("psnr_over_batches got no batches")
    return torch.cat(values)


def mean_psnr(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], data_range: float = 2.0) -> float:
    """The mean over samples of per-sample PSNR (the usual autoencoder figure), over batches."""
    return psnr_over_batches(pairs, data_range).mean().item()


def summarize_psnr(values: torch.Tensor) -> dict:
    """{"mean", "p5" (5th percentile: the worst reconstructions), "min", "n"} of per-sample PSNR in dB."""
    values = values.to(torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("summarize_psnr got no values")
    return {"mean": values.mean().item(), "p5": torch.quantile(values, 0.05).item(),
            "min": values.min().item(), "n": values.numel()}


def alexnet_weights_path() -> Path:
    """Where to put the AlexNet weights LPIPS needs: the torch hub cache file torchvision uses
    (`$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`), one of the places `resolve` looks."""
    from metrics.weights import spec, torch_hub_checkpoints

    return torch_hub_checkpoints() / spec("alexnet").filename


LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}  # net -> registry name of its torchvision weights


def lpips_network(device: torch.device | str = "cpu", weights: str | Path | None = None,
                  verify_hash: bool | None = None, missing_ok: bool = True, net: str = "alex"):
    """torchmetrics' LPIPS network (AlexNet or VGG16 backbone, the packaged v0.1 linear heads),
    frozen, in eval mode.

    `net`: "alex" (default, the LPIPS paper's recommended variant) or "vgg". The backbone file
    is `metrics.weights.resolve("alexnet" or "vgg16", path=weights)`: `weights` (a file or
    its folder) when given, else the registry's lookup (`$GEN_WEIGHTS`, the torch hub cache, ...).
    `verify_hash`: None (default) checks files found in caches and trusts an explicit `weights`
    (module docstring); True/False force it. Returns None when no file is found and `missing_ok`
    (LPIPS is optional for the trainer and `gen eval vae`); otherwise raises the registry's
    WeightsNotFoundError, which names every place looked in. A cache file with the wrong hash
    is always an error (WeightsHashError). Read with `torch.load(weights_only=True)`: tensors only.
    """
    from metrics.weights import REGISTRY, WeightsNotFoundError, load_state_dict, resolve

    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net must be one of {', '.join(LPIPS_BACKBONES)}, got {net!r}")
    verify = weights is None if verify_hash is None else verify_hash
    try:
        path = resolve(LPIPS_BACKBONES[net], path=weights, verify_hash=verify)
    except WeightsNotFoundError:
        if missing_ok and weights is None:
            return None
        raise
    # torchmetrics' public LPIPS (LearnedPerceptualImagePatchSimilarity) builds its backbone with
    # torchvision's download and takes no weights file, so the network class behind it is used:
    # its packaged v0.1 heads, a random backbone, and the backbone file resolved above.
    try:
        from torchmetrics.functional.image.lpips import _NoTrainLpips
    except ImportError:
        import torchmetrics

        raise ImportError(f"torchmetrics {torchmetrics.__version__} no longer has the LPIPS network gen builds on; "
                          f"install torchmetrics>=1.4,<2") from None
    network = _NoTrainLpips(net=net, pretrained=True, pnet_rand=True)  # heads loaded, backbone random
    state = load_state_dict(path)  # torchvision keys: features.{i}.weight / .bias (classifier ignored)
    slices = [getattr(network.net, f"slice{k}") for k in range(1, 6)]
    features = {f"slice{k}.{i}.{p}": f"features.{i}.{p}"  # slice k holds features[i], by its index
                for k, block in enumerate(slices, 1) for i, layer in block.named_children()
                for p, _ in layer.named_parameters()}
    missing = [v for v in features.values() if v not in state]
    if missing:
        raise ValueError(f"{path} is not a torchvision {net} state dict (no {', '.join(missing[:3])}); LPIPS "
                         f"needs {REGISTRY[LPIPS_BACKBONES[net]].filename} or a copy with the same keys")
    network.net.load_state_dict({k: state[v] for k, v in features.items()})
    return network.to(device).eval()


def lpips(network, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample LPIPS distance (B,) between images in [-1, 1] (lower is closer),
    differentiable in x and y (a training loss; wrap scoring in torch.no_grad()). Clips
    (B, C, T, H, W) are scored frame by frame and averaged over time. Sides below
    `LPIPS_MIN_SIDE` are upsampled (bilinear) first, as AlexNet's stem needs the room."""
    if x.shape != y.shape:
        raise ValueError(f"lpips needs tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    frames = x.shape[2] if x.dim() == 5 else 1
    if x.dim() == 5:
        x, y = (v.transpose(1, 2).flatten(0, 1) for v in (x, y))  # (B*T, C, H, W)
    side = min(x.shape[-2:])
    if side < LPIPS_MIN_SIDE:
        size = tuple(math.ceil(s * LPIPS_MIN_SIDE / side) for s in x.shape[-2:])
        x, y = (F.interpolate(v.float(), size=size, mode="bilinear", align_corners=False) for v in (x, y))
    device = next(network.parameters()).device
    x, y = (v.float().clamp(-1, 1).to(device) for v in (x, y))
    distance = network(x, y).flatten()  # (B*T,)
    return distance.view(-1, frames).mean(dim=1)


__all__ = ["LPIPS_BACKBONES", "psnr", "psnr_over_batches", "mean_psnr", "summarize_psnr", "alexnet_weights_path",
           "lpips_network", "lpips", "LPIPS_MIN_SIDE"]
