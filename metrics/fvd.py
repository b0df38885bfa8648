"""Frechet Video Distance (Unterthiner et al. 2018) under the StyleGAN-V protocol (Skorokhodov et al. 2022).

    from metrics.i3d import load_i3d
    from metrics.fvd import clip_features, fvd
    i3d = load_i3d(device="cuda")
    real = clip_features(i3d, real_clips, batch_size=8, device="cuda")  # (N, 3, 16, H, W) in [-1, 1] -> (N, 400)
    fake = clip_features(i3d, fake_clips, batch_size=8, device="cuda")
    fvd(real, fake)                                                      # float; 0 for identical statistics

FVD is the Frechet distance between Gaussians fitted to I3D features of real and generated
clips (FID's eq. 6 on video features):

    FVD = ||mu_r - mu_f||^2 + tr(S_r) + tr(S_f) - 2 tr((S_r^1/2 S_f S_r^1/2)^1/2)

computed by `metrics.stats` (one Frechet distance for FID and FVD). The protocol fixes what
goes in; StyleGAN-V's `src/metrics/frechet_video_distance.py` and `metric_utils.py`:

  clips      16 consecutive frames (FVD_16; FVD_128 takes 128), (N, 3, T, H, W); grayscale
             clips are repeated to 3 channels
  pixels     uint8: generated frames are quantised with (x * 127.5 + 128).clamp(0, 255) -> uint8
             (`quantize=True` here), real frames are the dataset's uint8 frames
  features   the Kinetics-400 I3D's 400 pre-softmax logits, averaged over time, after a
             bilinear resize to 224x224 and u / 255 * 2 - 1 (metrics.i3d)
  statistics mean and covariance of the features; StyleGAN-V divides the centred scatter by N
             (its FeatureStats.get_mean_cov), the TF FVD reference (tfgan) and numpy.cov by
             N - 1: `ddof` chooses, 0 by default as in the protocol. The two differ by the factor
             (N - 1) / N on both covariances, under 0.1% of the trace terms at N >= 2048.

StyleGAN-V reports FVD_16 on 2048 real and 2048 generated clips. Fewer clips than features
(400) give a rank-deficient covariance and a strongly biased FVD; metrics.stats warns.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .stats import as_float64_features, feature_stats, frechet_distance

FVD_FRAMES = 16  # frames per clip in the StyleGAN-V protocol (FVD_16)


def fvd(real_features, fake_features, ddof: int = 0) -> float:
    """FVD between feature sets (N_real, d) and (N_fake, d), tensors or arrays, N >= 2 each.

    ddof: the covariance divides the centred scatter by N - ddof: 0 is StyleGAN-V's (the protocol's),
    1 the unbiased one (the TF FVD reference's, numpy.cov's, metrics.stats.feature_stats').
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (StyleGAN-V: scatter / N) or 1 (unbiased: scatter / (N - 1)), got {ddof}")
    stats = []
    for name, features in (("real_features", real_features), ("fake_features", fake_features)):
        f = as_float64_features(features, name=name)
        if f.shape[0] < 2:
            raise ValueError(f"FVD needs at least 2 clips per set for a covariance, {name} has {f.shape[0]}; "
                             "the StyleGAN-V protocol uses 2048 real and 2048 generated clips")
        mu, sigma = feature_stats(f)  # unbiased: scatter / (N - 1)
        n = f.shape[0]
        stats.append((mu, sigma * ((n - 1) / (n - ddof))))
    (mu_r, sigma_r), (mu_f, sigma_f) = stats
    if mu_r.shape != mu_f.shape:
        raise ValueError(f"real and fake features differ in width: {mu_r.shape[0]} vs {mu_f.shape[0]}; "
                         "use one extractor for both")
    return frechet_distance(mu_r, sigma_r, mu_f, sigma_f)


def quantize(clips: torch.Tensor) -> torch.Tensor:
    """Floats in [-1, 1] -> uint8 as StyleGAN-V stores generated frames: (x * 127.5 + 128).clamp(0, 255),
    truncated, i.e. (x + 1) * 127.5 rounded half up. uint8 input is returned as it is."""
    if clips.dtype == torch.uint8:
        return clips
    return (clips.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def check_clips(clips: torch.Tensor, min_frames: int = FVD_FRAMES) -> torch.Tensor:
    """`clips` as (N, 3, T, H, W) with N >= 2 and T >= `min_frames` (grayscale repeated to RGB), else a
    ValueError saying what to change."""
    clips = torch.as_tensor(clips)
    if clips.dim() != 5 or clips.shape[1] not in (1, 3):
        raise ValueError(f"clips must be (N, C, T, H, W) with C = 3 (or 1), got shape {tuple(clips.shape)}; "
                         "(N, T, C, H, W) clips need .permute(0, 2, 1, 3, 4)")
    n, _, t = clips.shape[:3]
    if t < min_frames:
        raise ValueError(f"clips have {t} frames, but FVD under the StyleGAN-V protocol takes {min_frames}-frame "
                         f"clips (FVD_{min_frames}); sample {min_frames} consecutive frames per video (generate longer "
                         "clips, or pass min_frames= to knowingly use another protocol)")
    if n < 2:
        raise ValueError(f"FVD needs at least 2 clips (a covariance), got {n}; the protocol uses 2048 per set")
    return clips.expand(-1, 3, -1, -1, -1) if clips.shape[1] == 1 else clips


@torch.no_grad()
def clip_features(extractor: Callable[[torch.Tensor], torch.Tensor], clips: torch.Tensor, batch_size: int = 8,
                  device: torch.device | str = "cpu", quantize_frames: bool = True,
                  min_frames: int = FVD_FRAMES) -> torch.Tensor:
    """Features (N, d) float32 on the CPU of clips (N, C, T, H, W), `batch_size` clips at a time on `device`.

    clips: floats in [-1, 1] or uint8, C = 3 or 1 (repeated), T >= min_frames (16: FVD_16).
    extractor: (B, 3, T, H, W) -> (B, d), e.g. metrics.i3d.load_i3d(); it must already be on `device`.
    quantize_frames: float clips are first rounded to uint8 as StyleGAN-V does with generated frames (the
        extractor then gets uint8 clips, which the I3D takes); False hands it the floats.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    clips = check_clips(clips, min_frames)
    out = []
    for start in range(0, clips.shape[0], batch_size):
        batch = clips[start:start + batch_size]                  # (B, 3, T, H, W)
        batch = quantize(batch) if quantize_frames else batch
        features = extractor(batch.to(device))                   # (B, d)
        if features.dim() != 2 or features.shape[0] != batch.shape[0]:
            raise ValueError(f"the extractor must return (B, d) features, got {tuple(features.shape)} for "
                             f"{batch.shape[0]} clips")
        out.append(features.float().cpu())
    return torch.cat(out)


__all__ = ["fvd", "clip_features", "check_clips", "quantize", "FVD_FRAMES"]
