"""The metric formulas against closed forms and reference libraries (pytorch-fid, torchmetrics)."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from metrics.clip_score import clip_score
from metrics.inception_score import inception_score
from metrics.kid import kernel_inception_distance
from metrics.stats import FeatureStats, feature_stats, frechet_distance, psd_factor
from metrics.temporal import frame_consistency, temporal_consistency, temporal_flicker

pytestmark = pytest.mark.filterwarnings("ignore:Metric `.*` will save all extracted features:UserWarning")


def rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_covariance(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((d, 2 * d))
    return a @ a.T / (2 * d)


def correlated_features(n: int, d: int, seed: int, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / math.sqrt(d)
    return rng.standard_normal((n, d)) @ mix + rng.standard_normal(d) + offset


# ---------------------------------------------------------------- Frechet distance


def test_frechet_diagonal_closed_form():
    # commuting (diagonal) covariances: tr((S1 S2)^1/2) = sum sqrt(a_i b_i)
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([2.0, 1.0, 1.0, 0.5])
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_rotated_closed_form():
    # the same spectra in a common rotated basis: the distance is rotation invariant
    d = 16
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    r = rotation(d, 1)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(r @ mu1, r @ np.diag(a) @ r.T, r @ mu2, r @ np.diag(b) @ r.T)
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_non_commuting_2x2_closed_form():
    # S1 S2 has eigenvalues l1, l2 >= 0, so tr((S1 S2)^1/2) = sqrt(l1) + sqrt(l2)
    # = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2))
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    got = frechet_distance(np.zeros(2), s1, np.array([1.0, 0.0]), s2)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
def test_frechet_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    for d, seed in ((8, 0), (64, 1)):
        x, y = correlated_features(3 * d, d, seed), correlated_features(4 * d, d, seed + 10) * 1.3
        mu1, s1 = np.mean(x, axis=0), np.cov(x, rowvar=False)
        mu2, s2 = np.mean(y, axis=0), np.cov(y, rowvar=False)
        expected = calculate_frechet_distance(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
        assert frechet_distance(*feature_stats(x), *feature_stats(y)) == pytest.approx(expected, rel=1e-6)


def test_frechet_matches_torchmetrics_fid_metric():
    from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

    class Features(nn.Module):  # the "images" are the features themselves
        num_features = 32

        def forward(self, x):
            return x

    x = torch.from_numpy(correlated_features(300, 32, 3))
    y = torch.from_numpy(correlated_features(200, 32, 4) * 0.8 + 0.2)
    metric = FrechetInceptionDistance(feature=Features())
    for chunk in x.split(64):
        metric.update(chunk, real=True)
    for chunk in y.split(50):
        metric.update(chunk, real=False)
    real, fake = FeatureStats(), FeatureStats()
    for chunk in x.split(64):
        real.update(chunk)
    for chunk in y.split(50):
        fake.update(chunk)
    expected = metric.compute().item()
    assert real.frechet_distance(fake) == pytest.approx(expected, rel=1e-6)
    # and torchmetrics' own solver (general eigvals of S1 S2) on our statistics
    solver = _compute_fid(real.mean, real.covariance, fake.mean, fake.covariance).item()
    assert frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance) == pytest.approx(solver, rel=1e-8)


def test_frechet_properties():
    d = 24
    mu1, mu2 = np.random.default_rng(5).standard_normal((2, d))
    s1, s2 = random_covariance(d, 6), random_covariance(d, 7)
    forward, backward = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert forward == pytest.approx(backward, rel=1e-10)  # symmetric in the two Gaussians
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-10 * np.trace(s1)  # zero on itself
    assert frechet_distance(torch.tensor(mu1, dtype=torch.float32), s1, mu2, s2) == pytest.approx(forward, rel=1e-6)


def test_frechet_singular_covariances_stay_real():
    # n <= d: rank-deficient covariances; compare with eigenvalues of S1 S2 from a general solver
    d = 40
    x, y = correlated_features(20, d, 8), correlated_features(30, d, 9)
    with pytest.warns(UserWarning):
        (mu1, s1), (mu2, s2) = feature_stats(x), feature_stats(y)
    lam = np.linalg.eigvals(s1.numpy() @ s2.numpy()).real.clip(min=0)
    expected = float(np.sum((mu1 - mu2).numpy() ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum())
    got = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float) and math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-6)


def test_psd_factor_both_branches():
    definite = torch.from_numpy(random_covariance(12, 20))  # Cholesky
    x = torch.from_numpy(correlated_features(5, 12, 21))
    singular = (x - x.mean(dim=0)).T @ (x - x.mean(dim=0)) / 4  # rank 4: eigh, clamped
    for sigma in (definite, singular):
        f = psd_factor(sigma)
        torch.testing.assert_close(f @ f.T, sigma, rtol=1e-10, atol=1e-12)
    assert torch.equal(psd_factor(definite), torch.linalg.cholesky(definite))


def test_frechet_errors():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must be \(3, 3\)"):
        frechet_distance(mu, s, mu, np.eye(2))
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(mu, s, mu, np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(mu, np.diag([1.0, -1.0, 1.0]), mu, s)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, np.full((3, 3), np.nan), mu, s)


# ---------------------------------------------------------------- FeatureStats


def test_feature_stats_match_numpy_and_merge_equals_one_pass():
    x = correlated_features(257, 12, 10)
    one_pass = FeatureStats().update(x)
    streamed = FeatureStats()
    for chunk in np.array_split(x, [1, 50, 51, 200]):  # uneven batches, one of a single sample
        streamed.update(torch.from_numpy(chunk))
    left, right = FeatureStats().update(x[:100]), FeatureStats().update(x[100:])
    merged = left.merge(right)
    for stats in (one_pass, streamed, merged):
        assert stats.n == 257
        np.testing.assert_allclose(stats.mean.numpy(), x.mean(axis=0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(stats.covariance.numpy(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-13)
    assert right.n == 157  # merge leaves its argument alone
    assert FeatureStats().merge(one_pass).n == 257


def test_feature_stats_keep_precision_under_a_large_offset():
    # raw sum-of-outer-products loses ~log10(offset^2 / var) digits; the centred update does not
    x = correlated_features(500, 8, 11, offset=1e7)
    stats = FeatureStats()
    for chunk in np.array_split(x, 5):
        stats.update(chunk)
    reference = np.cov(x - x.mean(axis=0), rowvar=False)
    np.testing.assert_allclose(stats.covariance.numpy(), reference, rtol=1e-6, atol=1e-8)


def test_feature_stats_warn_when_n_not_above_d():
    stats = FeatureStats().update(correlated_features(10, 10, 12))
    with pytest.warns(UserWarning, match=r"n=10 .*d=10.*biased"):
        stats.covariance
    assert stats.diagnostics() == {"n": 10, "d": 10, "rank": 9}
    stats.update(correlated_features(5, 10, 13))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats.covariance
    assert stats.diagnostics() == {"n": 15, "d": 10, "rank": 10}


def test_feature_stats_errors():
    with pytest.raises(ValueError, match="at least 2 samples.*has 1"):
        FeatureStats().update(np.zeros((1, 4))).covariance
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_stats(np.zeros((1, 4)))
    stats = FeatureStats().update(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="5 features per sample but this FeatureStats holds 4"):
        stats.update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="holds 4"):
        stats.merge(FeatureStats().update(np.zeros((3, 6))))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        stats.update(np.zeros((3, 4, 1, 1)))
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.update(np.array([[0.0, 1.0, np.inf, 0.0]]))


# ---------------------------------------------------------------- KID


def kid_closed_form(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, pair by pair."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_full_sets_match_closed_form_and_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance

    x, y = correlated_features(40, 6, 14), correlated_features(40, 6, 15) + 0.3
    expected = kid_closed_form(x, y)
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=40)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=3, subset_size=40)
    metric.update(torch.from_numpy(x), real=True)
    metric.update(torch.from_numpy(y), real=False)
    assert metric.compute()[0].item() == pytest.approx(expected, rel=1e-10)


def test_kid_matches_torchmetrics_subsets():
    from torchmetrics.image.kid import KernelInceptionDistance

    x, y = correlated_features(120, 16, 16), correlated_features(90, 16, 17) * 1.2
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=7, subset_size=30)
    metric.update(torch.from_numpy(x), real=True)
    metric.update(torch.from_numpy(y), real=False)
    torch.manual_seed(123)  # torchmetrics draws its subsets from the global RNG
    tm_mean, tm_std = metric.compute()
    ours = kernel_inception_distance(x, y, subsets=7, subset_size=30, seed=123)
    assert ours.mean == pytest.approx(tm_mean.item(), rel=1e-10)
    assert ours.std == pytest.approx(tm_std.item(), rel=1e-8)
    assert ours.std > 0
    assert kernel_inception_distance(x, y, subsets=7, subset_size=30, seed=123) == ours  # same seed, same value
    assert kernel_inception_distance(x, y, subsets=7, subset_size=30, seed=124).mean != ours.mean  # subsets matter


def test_kid_errors():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match="subset_size.*10 real, 8 fake.*got 9"):
        kernel_inception_distance(x, np.zeros((8, 4)), subset_size=9)
    with pytest.raises(ValueError, match="dimension: 4 vs 5"):
        kernel_inception_distance(x, np.zeros((10, 5)), subset_size=5)


# ---------------------------------------------------------------- Inception Score


@pytest.mark.parametrize("n, splits", [(100, 10), (23, 4), (6, 4)])
def test_inception_score_matches_torchmetrics(n, splits):
    from torchmetrics.image.inception import InceptionScore

    logits = torch.from_numpy(np.random.default_rng(n).standard_normal((n, 7)) * 3)
    metric = InceptionScore(feature=nn.Identity(), splits=splits)
    metric.update(logits)
    torch.manual_seed(7)  # torchmetrics shuffles with the global RNG
    tm_mean, tm_std = metric.compute()
    mean, std = inception_score(logits, splits=splits, seed=7)
    assert mean == pytest.approx(tm_mean.item(), rel=1e-10)
    assert std == pytest.approx(tm_std.item(), rel=1e-8)


def test_inception_score_closed_forms():
    k = 5
    confident = torch.eye(k).repeat(4, 1)  # (20, 5) one-hot, classes evenly spread: IS = K
    assert inception_score(confident, splits=1, from_logits=False, shuffle=False).mean == pytest.approx(k, rel=1e-12)
    same = torch.softmax(torch.randn(1, k), dim=1).repeat(30, 1)  # identical predictions: IS = 1
    assert inception_score(same, splits=3, from_logits=False).mean == pytest.approx(1.0, rel=1e-12)
    # two classes, probabilities (q, 1 - q) and (1 - q, q) half each: marginal uniform, IS = exp(log 2 - H(q))
    q = 0.9
    probs = torch.tensor([[q, 1 - q], [1 - q, q]], dtype=torch.float64).repeat(5, 1)
    entropy = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    assert inception_score(probs, splits=1, from_logits=False).mean == pytest.approx(math.exp(math.log(2) - entropy))
    logits = torch.randn(40, 6, dtype=torch.float64)
    from_logits = inception_score(logits, splits=4, seed=3)
    from_probs = inception_score(logits.softmax(dim=1), splits=4, from_logits=False, seed=3)
    assert from_logits.mean == pytest.approx(from_probs.mean, rel=1e-12)


def test_inception_score_errors():
    with pytest.raises(ValueError, match="splits must be an integer between 1 and the number of samples \\(3\\)"):
        inception_score(torch.randn(3, 4), splits=4)
    with pytest.raises(ValueError, match="probabilities"):
        inception_score(torch.randn(8, 4), splits=2, from_logits=False)


# ---------------------------------------------------------------- CLIPScore


class FakeCLIP(nn.Module):
    """A stand-in for a CLIP model with fixed embeddings: an "image" is a (D, 1, 1) tensor
    holding its embedding, a caption is a row number of the text table."""

    def __init__(self, text_table: torch.Tensor):
        super().__init__()
        self.text_table = text_table
        self.config = None

    def get_image_features(self, pixel_values):
        return pixel_values.flatten(1)

    def get_text_features(self, input_ids, attention_mask):
        return self.text_table[input_ids[:, 0]]


def fake_clip_processor(images=None, text=None, **kwargs):
    if images is not None:
        return {"pixel_values": torch.stack(images)}
    ids = torch.tensor([[int(t)] for t in text])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_clip_score_matches_torchmetrics():
    from torchmetrics.multimodal.clip_score import CLIPScore

    rng = np.random.default_rng(18)
    images = torch.from_numpy(rng.standard_normal((12, 8)))
    texts = torch.from_numpy(rng.standard_normal((12, 8))) + 0.5 * images  # mostly positive cosines
    metric = CLIPScore(model_name_or_path=lambda: (FakeCLIP(texts), fake_clip_processor))
    metric.update(list(images.view(12, 8, 1, 1)), [str(i) for i in range(12)])
    result = clip_score(images, texts)
    assert result.reduction == "torchmetrics" and result.n == 12
    assert result.score == pytest.approx(metric.compute().item(), rel=1e-6)


def test_clip_score_reductions_closed_form():
    angles = torch.tensor([0.0, math.pi / 3, math.pi / 2, 2 * math.pi / 3])  # cosines 1, 1/2, 0, -1/2
    image = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * 3.0  # norms do not matter
    text = torch.tensor([[1.0, 0.0]]).repeat(4, 1)
    tm, hessel = clip_score(image, text), clip_score(image, text, reduction="hessel2021")
    torch.testing.assert_close(tm.cosine, torch.tensor([1.0, 0.5, 0.0, -0.5], dtype=torch.float64))
    assert tm.score == pytest.approx(100 * (1 + 0.5 + 0 - 0.5) / 4)  # clamp after the mean
    assert hessel.score == pytest.approx(2.5 * (1 + 0.5 + 0 + 0) / 4)  # clamp per pair
    assert hessel.reduction == "hessel2021"
    assert clip_score(-image, text).score == 0.0  # negative mean clamps to 0


def test_clip_score_errors():
    with pytest.raises(ValueError, match="reduction must be one of"):
        clip_score(torch.ones(2, 3), torch.ones(2, 3), reduction="mean")
    with pytest.raises(ValueError, match="same shape"):
        clip_score(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"text_embeds has all-zero rows \[1\]"):
        clip_score(torch.ones(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]]))


# ---------------------------------------------------------------- temporal


def test_frame_consistency_closed_forms():
    d = 6
    still = torch.randn(1, 1, d).repeat(1, 5, 1) * torch.tensor([1.0, 2, 3, 4, 5]).view(1, 5, 1)  # same direction
    basis = torch.eye(d)[:5].unsqueeze(0)  # (1, 5, d): consecutive frames orthogonal
    angle = 0.3
    turning = torch.stack([torch.tensor([math.cos(angle * t), math.sin(angle * t)]) for t in range(4)]).unsqueeze(0)
    torch.testing.assert_close(frame_consistency(still), torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(frame_consistency(basis), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(frame_consistency(turning), torch.tensor([math.cos(angle)], dtype=torch.float64))
    flipping = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]]])
    torch.testing.assert_close(frame_consistency(flipping), torch.tensor([-1.0], dtype=torch.float64))


def test_temporal_consistency_encodes_each_frame():
    clips = torch.rand(3, 2, 4, 5, 5) * 2 - 1  # (B, C, T, H, W)
    encode = lambda frames: frames.mean(dim=(2, 3)) + 2.0  # noqa: E731  (N, C, H, W) -> (N, C)
    features = clips.mean(dim=(3, 4)).transpose(1, 2) + 2.0  # (B, T, C), computed independently
    expected = torch.nn.functional.cosine_similarity(features[:, 1:], features[:, :-1], dim=2).mean(dim=1)
    torch.testing.assert_close(temporal_consistency(clips, encode, batch_size=5), expected.double())


def test_temporal_flicker_closed_forms():
    static = torch.rand(2, 3, 6, 4, 4).mul(2).sub(1)[:, :, :1].repeat(1, 1, 6, 1, 1)
    torch.testing.assert_close(temporal_flicker(static), torch.zeros(2, dtype=torch.float64))
    strobe = torch.tensor([-1.0, 1.0, -1.0, 1.0]).view(1, 1, 4, 1, 1).expand(1, 3, 4, 8, 8)  # full swing each frame
    torch.testing.assert_close(temporal_flicker(strobe), torch.ones(1, dtype=torch.float64))
    ramp = torch.linspace(-1, 1, 5).view(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 2)  # steps of 0.5 in a range of 2
    torch.testing.assert_close(temporal_flicker(ramp), torch.tensor([0.25], dtype=torch.float64))
    uint8 = torch.tensor([0, 51, 0]).view(1, 1, 3, 1, 1).to(torch.uint8)
    torch.testing.assert_close(temporal_flicker(uint8, data_range=255), torch.tensor([0.2], dtype=torch.float64))


def test_temporal_errors():
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_flicker(torch.zeros(1, 3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        temporal_flicker(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="all-zero"):
        frame_consistency(torch.zeros(1, 3, 4))
