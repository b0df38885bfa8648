"""Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs", sec. 4).

    from metrics.inception_score import inception_score
    score = inception_score(logits, splits=10, seed=0)    # logits (N, K) from a classifier
    score.mean, score.std                                   # also unpacks: mean, std = score
    inception_score(probs, from_logits=False)               # or class probabilities p(y|x)

IS = exp(E_x KL(p(y|x) || p(y))), with the marginal p(y) the mean of p(y|x) over the split:

    IS_s = exp(1/|s| sum_{x in s} sum_y p(y|x) (log p(y|x) - log p_s(y))),   p_s(y) = mean_{x in s} p(y|x)

It lies in [1, K]: 1 when every sample gets the same prediction, K when predictions are
confident and spread evenly over the K classes.

The split scheme is torchmetrics' InceptionScore's: shuffle the samples (randperm, here
from a CPU generator seeded `seed`; `torch.manual_seed(seed)` before torchmetrics'
compute() gives the same order), then `torch.chunk(splits)`: chunks of ceil(N / splits)
samples, the last one smaller when N is not a multiple of `splits` (and fewer than
`splits` chunks when the remainder runs out early, e.g. N = 6, splits = 4 gives 2, 2, 2).
The mean and the unbiased (n - 1) standard deviation are over those chunks, as
torchmetrics reports them (the original TF code used the population std). Float64.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from metrics.stats import as_float64_features


class ISResult(NamedTuple):
    mean: float  # mean over splits of IS_s
    std: float  # unbiased standard deviation over splits (nan for a single split)


def inception_score(scores, splits: int = 10, from_logits: bool = True, shuffle: bool = True,
                    seed: int = 0) -> ISResult:
    """IS of class scores (N, K): logits (softmax taken here, the default) or, with
    `from_logits=False`, probabilities whose rows sum to 1. Returns ISResult(mean, std)."""
    x = as_float64_features(scores, name="class scores")
    n, k = x.shape
    if k < 2:
        raise ValueError(f"inception_score needs scores over at least 2 classes, got shape {tuple(x.shape)}")
    if not (isinstance(splits, int) and 1 <= splits <= n):
        raise ValueError(f"splits must be an integer between 1 and the number of samples ({n}), got {splits!r}")
    if from_logits:
        log_p = x.log_softmax(dim=1)  # (N, K)
        p = log_p.exp()
    else:
        row_sums = x.sum(dim=1)
        if (x < 0).any() or not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4):
            raise ValueError("with from_logits=False the scores must be probabilities (non-negative rows "
                             f"summing to 1; row sums span [{row_sums.min().item():.4g}, "
                             f"{row_sums.max().item():.4g}]); pass logits with from_logits=True")
        p = x
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(p.device)
        p = p[order]

    per_split = []
    for part in p.chunk(splits, dim=0):  # (n_s, K) each
        marginal = part.mean(dim=0, keepdim=True)  # (1, K): p_s(y)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)  # (n_s,), 0 log 0 = 0
        per_split.append(kl.mean().exp())
    values = torch.stack(per_split)
    std = values.std().item() if len(values) > 1 else float("nan")
    return ISResult(values.mean().item(), std)


__all__ = ["ISResult", "inception_score"]
