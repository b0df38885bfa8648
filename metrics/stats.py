"""Gaussian feature statistics and the Frechet distance between them (the math behind FID and FVD).

    from metrics.stats import FeatureStats, feature_stats, frechet_distance
    real, fake = FeatureStats(), FeatureStats()
    for batch in loader:
        real.update(backbone(batch))          # (B, d) features, any float dtype, any device
    fake.update(backbone(samples))
    fid = frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance)
    mu, sigma = feature_stats(features)       # one-shot: (d,), (d, d) float64

The Frechet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau
1982; FID: Heusel et al. 2017, eq. 6) is

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

The last trace equals tr((S1 S2)^1/2) as usually written, since S1 S2 and S1^1/2 S2 S1^1/2
are similar. It is computed from symmetric factorizations only, never a general matrix
square root: for any factor S1 = F F^T, F^T S2 F is symmetric PSD with the eigenvalues of
S1 S2 (and of S1^1/2 S2 S1^1/2), so the trace is the sum of the square roots of
eigvalsh(F^T S2 F), clamped at 0. F is the Cholesky factor when S1 is positive definite,
and otherwise (n <= d, dead features) F = V diag(w)^1/2 from S1's eigh with its tiny
negative eigenvalues clamped at 0, i.e. S1^1/2 = F V^T. The result is real by construction
and, at d = 2048, several times faster than scipy.linalg.sqrtm (`scripts/bench_fid.py`).

Everything is float64. The streaming accumulator keeps (n, mean, centred scatter) and
merges with Chan et al.'s (1979) pairwise update, so a large common offset in the features
costs no precision (the raw "sum and sum of outer products" form loses digits to
cancellation); the covariance is the unbiased one, scatter / (n - 1), as numpy.cov and
pytorch-fid compute it.
"""

from __future__ import annotations

import warnings

import torch

PSD_TOLERANCE = 1e-4  # eigenvalues below -PSD_TOLERANCE * max|eigenvalue| mean "not a covariance"


def as_float64(x, device: torch.device | None = None) -> torch.Tensor:
    """A detached float64 copy-or-view of a tensor or array; MPS has no float64, so it moves to the CPU."""
    t = torch.as_tensor(x).detach()
    device = t.device if device is None else torch.device(device)
    if device.type == "mps":
        device = torch.device("cpu")
    return t.to(device=device, dtype=torch.float64)


def as_float64_features(features, device: torch.device | None = None, name: str = "features") -> torch.Tensor:
    """`features` as a checked (N, d) float64 tensor: two-dimensional and finite."""
    f = as_float64(features, device)
    if f.dim() != 2:
        raise ValueError(f"{name} must be (N, d), one row per sample, got shape {tuple(f.shape)}; "
                         "flatten backbone outputs first (e.g. features.flatten(1))")
    if not torch.isfinite(f).all():
        bad = (~torch.isfinite(f)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} hold NaN or inf (rows {bad}): check the backbone and its inputs")
    return f


class FeatureStats:
    """Streaming, mergeable mean and covariance of features, in float64.

    `update(features)` takes (B, d) batches; `merge(other)` folds in another accumulator
    (another process, another shard) and gives exactly what one pass over both would, up to
    round-off. State: n, the mean (d,), and the centred scatter sum_i (x_i - mean)(x_i - mean)^T
    (d, d). It lives on `device` (default: the first batch's device; the CPU for MPS).
    """

    def __init__(self, dim: int | None = None, device: torch.device | str | None = None):
        self.dim = dim
        self.device = None if device is None else torch.device(device)
        self.n = 0
        self._mean: torch.Tensor | None = None  # (d,)
        self._scatter: torch.Tensor | None = None  # (d, d)

    def _check_dim(self, d: int, what: str) -> None:
        if self.dim is None:
            self.dim = d
        elif d != self.dim:
            raise ValueError(f"{what} has {d} features per sample but this FeatureStats holds {self.dim}")

    def _combine(self, n_b: int, mean_b: torch.Tensor, scatter_b: torch.Tensor) -> None:
        """Chan et al. (1979): merge (n_a, mean_a, M_a) with (n_b, mean_b, M_b)."""
        if self.n == 0:
            self.n, self._mean, self._scatter = n_b, mean_b, scatter_b
            return
        n = self.n + n_b
        delta = mean_b - self._mean  # (d,)
        self._mean = self._mean + delta * (n_b / n)
        self._scatter = self._scatter + scatter_b + torch.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def update(self, features) -> FeatureStats:
        """Add a batch of features (B, d) (tensor or array, any float dtype). Returns self."""
        f = as_float64_features(features, self.device)
        self._check_dim(f.shape[1], "this batch")
        if f.shape[0] == 0:
            return self
        if self.device is None:
            self.device = f.device
        mean_b = f.mean(dim=0)  # (d,)
        centred = f - mean_b  # (B, d)
        self._combine(f.shape[0], mean_b, centred.T @ centred)
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Fold `other` into self (other is unchanged). Returns self."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"merge wants a FeatureStats, got {type(other).__name__}")
        if other.n == 0:
            return self
        self._check_dim(other.dim, "the other FeatureStats")
        if self.device is None:
            self.device = other.device
        self._combine(other.n, other._mean.to(self.device), other._scatter.to(self.device))
        return self

    def _need(self, k: int, what: str) -> None:
        if self.n < k:
            raise ValueError(f"the {what} needs at least {k} sample{'s' * (k > 1)}, this FeatureStats has {self.n}")

    @property
    def mean(self) -> torch.Tensor:
        """(d,) float64 sample mean."""
        self._need(1, "mean")
        return self._mean.clone()

    @property
    def covariance(self) -> torch.Tensor:
        """(d, d) float64 unbiased sample covariance, scatter / (n - 1) (numpy.cov, pytorch-fid).

        Warns when n <= d: the covariance then has rank at most n - 1 < d, and the Frechet
        distance computed from it is biased (upwards, strongly so for n << d)."""
        self._need(2, "covariance")
        if self.n <= self.dim:
            warnings.warn(f"covariance of n={self.n} samples in d={self.dim} dimensions: n <= d, so it has "
                          f"rank <= {self.n - 1} < d and Frechet distances from it are strongly biased; "
                          f"use more than {self.dim} samples (FID is usually reported at n >= 10,000)",
                          stacklevel=2)
        return self._scatter / (self.n - 1)

    def diagnostics(self) -> dict:
        """{"n", "d", "rank"}: samples seen, feature dimension, numerical rank of the covariance
        (eigenvalues above max * d * float64 eps, numpy.linalg.matrix_rank's rule)."""
        rank = 0
        if self.n >= 2:
            w = torch.linalg.eigvalsh(self._scatter)
            rank = int((w > w.abs().max() * self.dim * torch.finfo(torch.float64).eps).sum())
        return {"n": self.n, "d": self.dim, "rank": rank}

    def frechet_distance(self, other: FeatureStats) -> float:
        """`frechet_distance` between the Gaussians fitted to self and to `other`."""
        return frechet_distance(self.mean, self.covariance, other.mean, other.covariance)

    def __repr__(self) -> str:
        return f"FeatureStats(n={self.n}, d={self.dim})"


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (d,), sigma (d, d)) of features (N, d) in float64: the mean and the unbiased covariance."""
    stats = FeatureStats().update(features)
    return stats.mean, stats.covariance


def _check_psd_eigenvalues(w: torch.Tensor, name: str) -> torch.Tensor:
    scale = w.abs().max()
    if w.min() < -PSD_TOLERANCE * scale:
        raise ValueError(f"{name} is not positive semi-definite: eigenvalue {w.min().item():.3g} "
                         f"(largest magnitude {scale.item():.3g}); pass covariance matrices")
    return w.clamp_min(0)


def psd_factor(sigma: torch.Tensor, name: str = "sigma") -> torch.Tensor:
    """F (d, d) with F F^T = sigma for a symmetric PSD `sigma`: the Cholesky factor when sigma
    is positive definite, else V diag(w)^1/2 from eigh (eigenvalues within round-off of 0
    clamped to 0; clearly negative ones raise)."""
    factor, info = torch.linalg.cholesky_ex(sigma)
    if info.item() == 0:
        return factor
    w, v = torch.linalg.eigh(sigma)  # sigma = V diag(w) V^T
    return v * _check_psd_eigenvalues(w, name).sqrt()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2), in float64.

    Means (d,) and covariances (d, d), as tensors or arrays (pytorch-fid's saved mu/sigma
    work as they are). Computed from a factor of S1 and eigvalsh (see the module docstring)
    on mu1's device (the CPU for MPS). Symmetric in its two Gaussians; round-off can leave
    it a hair below 0 for identical statistics.
    """
    mu1 = as_float64(mu1)
    device = mu1.device
    mu2, sigma1, sigma2 = (as_float64(x, device) for x in (mu2, sigma1, sigma2))
    if mu1.dim() != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be two (d,) vectors of the same length, got {tuple(mu1.shape)} "
                         f"and {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}) to match the means, got {tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise ValueError(f"{name} holds NaN or inf")
        asymmetry = (s - s.T).abs().max()
        if asymmetry > PSD_TOLERANCE * s.abs().max():
            raise ValueError(f"{name} is not symmetric (max |S - S^T| = {asymmetry.item():.3g}); pass a covariance")
    if not (torch.isfinite(mu1).all() and torch.isfinite(mu2).all()):
        raise ValueError("means hold NaN or inf")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2

    f = psd_factor(sigma1, "sigma1")  # S1 = F F^T
    m = f.T @ sigma2 @ f  # (d, d) symmetric PSD, eigenvalues of S1 S2
    lam = _check_psd_eigenvalues(torch.linalg.eigvalsh((m + m.T) / 2), "sigma2 (seen through sigma1)")
    tr_covmean = lam.sqrt().sum()

    diff = mu1 - mu2
    return (diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * tr_covmean).item()


__all__ = ["FeatureStats", "feature_stats", "frechet_distance", "psd_factor"]
