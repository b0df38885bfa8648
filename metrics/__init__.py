"""Scores for generated images and clips: one float64 implementation of each formula.

    import metrics
    mu, sigma = metrics.feature_stats(features)               # (N, D) -> float64 moments
    fid = metrics.frechet_distance(mu1, sigma1, mu2, sigma2)  # a float

Never imports `gen` or `samplers`.
"""

from metrics.clip_score import CLIPScoreResult, clip_score
from metrics.inception_score import ISResult, inception_score
from metrics.kid import KIDResult, kernel_inception_distance
from metrics.stats import FeatureStats, feature_stats, frechet_distance
from metrics.temporal import frame_consistency, temporal_consistency, temporal_flicker

__all__ = ["FeatureStats", "feature_stats", "frechet_distance", "KIDResult", "kernel_inception_distance",
           "ISResult", "inception_score", "CLIPScoreResult", "clip_score", "frame_consistency",
           "temporal_consistency", "temporal_flicker"]
