"""CLIPScore from image and text embeddings: how well each picture matches its caption.

    from metrics.clip_score import clip_score
    result = clip_score(image_embeds, text_embeds)                          # (N, D) each, row i = pair i
    result.score, result.reduction, result.cosine                           # float, "torchmetrics", (N,)
    clip_score(image_embeds, text_embeds, reduction="hessel2021").score

The per-pair quantity is the cosine c_i = <e_I, e_T> / (|e_I| |e_T|) between the CLIP image
embedding of sample i and the text embedding of its caption, in float64. Two published
reductions turn them into one number, and they differ, so the result records which one:

    "torchmetrics"  max(100 * mean_i c_i, 0)        torchmetrics' CLIPScore: the clamp at 0
                                                    applies to the mean, not to each pair
                                                    (its docstring writes max(100 cos, 0)).
    "hessel2021"    mean_i 2.5 * max(c_i, 0)        Hessel et al. 2021, "CLIPScore", eq. 1
                                                    (w = 2.5), clamped per pair.

They agree up to the factor 40 whenever no cosine is negative (the usual case for real CLIP
embeddings, whose image-text cosines sit around 0.2 to 0.35).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metrics.stats import as_float64_features

REDUCTIONS = ("torchmetrics", "hessel2021")
HESSEL_W = 2.5  # Hessel et al. 2021 rescale cosines by w = 2.5


@dataclass(frozen=True)
class CLIPScoreResult:
    score: float  # the reduced score
    reduction: str  # which reduction produced it (one of REDUCTIONS)
    cosine: torch.Tensor  # (N,) float64 per-pair cosines, before any clamp or scale
    n: int  # number of pairs


def pairwise_cosine(a, b, names: tuple[str, str] = ("a", "b")) -> torch.Tensor:
    """Cosine between row i of `a` and row i of `b`, both (N, D): (N,) float64. Zero rows are an error."""
    a = as_float64_features(a, name=names[0])
    b = as_float64_features(b, a.device, name=names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must be paired row by row with the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    for name, x in zip(names, (a, b)):
        norm = x.norm(dim=1)
        if (norm == 0).any():
            raise ValueError(f"{name} has all-zero rows {(norm == 0).nonzero().flatten()[:5].tolist()}: "
                             "their cosine is undefined")
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def clip_score(image_embeds, text_embeds, reduction: str = "torchmetrics") -> CLIPScoreResult:
    """CLIPScore of N (image, caption) pairs from their embeddings (N, D) each (see module doc)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    cos = pairwise_cosine(image_embeds, text_embeds, ("image_embeds", "text_embeds"))
    if cos.numel() == 0:
        raise ValueError("clip_score got no pairs")
    if reduction == "torchmetrics":
        score = (100 * cos.mean()).clamp_min(0)
    else:
        score = (HESSEL_W * cos.clamp_min(0)).mean()
    return CLIPScoreResult(score=score.item(), reduction=reduction, cosine=cos.cpu(), n=cos.numel())


__all__ = ["CLIPScoreResult", "REDUCTIONS", "clip_score", "pairwise_cosine"]
