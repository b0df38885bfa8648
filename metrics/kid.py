"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 4 and app. D).

    from metrics.kid import kernel_inception_distance
    kid = kernel_inception_distance(real_features, fake_features, subsets=100, subset_size=1000, seed=0)
    kid.mean, kid.std                     # also unpacks: mean, std = kid

KID is the squared maximum mean discrepancy between real and generated features under the
cubic polynomial kernel k(x, y) = (gamma x.y + coef)^degree, gamma = 1/d by default. On
subsets X, Y of m samples each it is estimated without bias (Gretton et al. 2012, eq. 3):

    MMD^2_u = 1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i, j} k(x_i, y_j)

averaged over `subsets` random subsets drawn without replacement, with the standard
deviation over subsets (population std, as torchmetrics reports it). Unlike FID it has no
bias in n, so it can be negative when the two sets match.

Subsets are drawn exactly as torchmetrics' KernelInceptionDistance draws them (per subset,
randperm(n_real)[:m], then randperm(n_fake)[:m]) but from a generator seeded with `seed`
instead of the global RNG: `torch.manual_seed(seed)` before torchmetrics' compute() gives
the same subsets, hence the same numbers. Computed in float64 on the features' device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from metrics.stats import as_float64_features


class KIDResult(NamedTuple):
    mean: float  # mean of MMD^2_u over subsets
    std: float  # population standard deviation over subsets


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0) -> torch.Tensor:
    """k(x_i, y_j) = (gamma x_i . y_j + coef)^degree for all pairs: (n, d), (m, d) -> (n, m); gamma defaults to 1/d."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None,
                  coef: float = 1.0) -> torch.Tensor:
    """The unbiased MMD^2 estimate between equal-size samples x, y (m, d) under the polynomial kernel."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = (polynomial_kernel(a, b, degree, gamma, coef) for a, b in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())  # i != j only
    return within / (m * (m - 1)) - 2 * k_xy.sum() / m**2


def kernel_inception_distance(real_features, fake_features, subsets: int = 100, subset_size: int = 1000,
                              degree: int = 3, gamma: float | None = None, coef: float = 1.0,
                              seed: int = 0) -> KIDResult:
    """KID between feature sets (n_real, d) and (n_fake, d): MMD^2_u over `subsets` random
    subsets of `subset_size` samples from each, drawn with a CPU generator seeded `seed`.
    Returns KIDResult(mean, std) as floats (std: population, over subsets)."""
    real = as_float64_features(real_features, name="real features")
    fake = as_float64_features(fake_features, real.device, name="fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    if not (isinstance(subsets, int) and subsets > 0):
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    n = min(real.shape[0], fake.shape[0])
    if not (isinstance(subset_size, int) and 2 <= subset_size <= n):
        raise ValueError(f"subset_size must be an integer between 2 and the smaller set's size "
                         f"({real.shape[0]} real, {fake.shape[0]} fake), got {subset_size!r}; "
                         f"pass subset_size={n} or more samples")
    if not (isinstance(degree, int) and degree > 0):
        raise ValueError(f"degree must be a positive integer, got {degree!r}")

    generator = torch.Generator().manual_seed(seed)
    scores = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        i_real = torch.randperm(real.shape[0], generator=generator)[:subset_size].to(real.device)
        i_fake = torch.randperm(fake.shape[0], generator=generator)[:subset_size].to(real.device)
        scores[s] = mmd2_unbiased(real[i_real], fake[i_fake], degree, gamma, coef).cpu()
    return KIDResult(scores.mean().item(), scores.std(unbiased=False).item())


__all__ = ["KIDResult", "kernel_inception_distance", "mmd2_unbiased", "polynomial_kernel"]
