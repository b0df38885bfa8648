"""Cached reference statistics: `gen score stats`, `--save-stats`, `--real FILE.npz` for FID and KID; what a
stats file records and refuses; and the FID Inception's statistics against pytorch-fid's own."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gen.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    for name, seed, n in (("real", 0, 24), ("fake", 5, 20)):
        assert main(["data", "toy", "--n", str(n), "--size", "32", "--seed", str(seed), "--out", str(root / name)]) == 0
    return root


def _run(capsys, *argv):
    code = main(["score", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stats_file_stands_in_for_the_folder(folders, tmp_path, capsys):
    real, fake = str(folders / "real"), str(folders / "fake")
    file = tmp_path / "real.npz"
    code, out, _ = _run(capsys, "stats", real, "--out", str(file), "--json")
    assert code == 0 and json.loads(out)["n"] == 24 and json.loads(out)["d"] == 128
    with np.load(file, allow_pickle=False) as z:  # plain arrays: nothing to unpickle
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    assert (meta["features"], meta["n"], meta["d"]) == ("toy", 24, 128) and len(meta["weights_sha256"]) == 64
    features = torch.from_numpy(arrays["features"]).double()  # (n, d): what KID needs
    assert features.shape == (24, 128)
    np.testing.assert_allclose(arrays["mu"], np.mean(arrays["features"].astype(np.float64), axis=0), rtol=1e-12)
    np.testing.assert_allclose(arrays["sigma"], np.cov(arrays["features"].astype(np.float64), rowvar=False),
                               rtol=1e-10, atol=1e-14)

    _, from_folder, _ = _run(capsys, "fid", "--real", real, "--fake", fake, "--json")
    code, from_file, err = _run(capsys, "fid", "--real", str(file), "--fake", fake, "--json")
    assert code == 0 and err.count("n <= d") == 1
    assert json.loads(from_file)["fid"] == pytest.approx(json.loads(from_folder)["fid"], rel=1e-12)
    assert json.loads(from_file)["n_real"] == 24
    kid = ("--subsets", "4", "--subset-size", "10", "--json")
    _, kid_folder, _ = _run(capsys, "kid", "--real", real, "--fake", fake, *kid)
    code, kid_file, _ = _run(capsys, "kid", "--real", str(file), "--fake", fake, *kid)
    assert code == 0
    assert json.loads(kid_file)["kid_mean"] == pytest.approx(json.loads(kid_folder)["kid_mean"], rel=1e-12)

    # never overwritten silently; --save-stats writes the same statistics while scoring
    before = file.read_bytes()
    code, _, err = _run(capsys, "stats", fake, "--out", str(file))
    assert code == 2 and "exists; pass --overwrite" in err and file.read_bytes() == before
    code, _, err = _run(capsys, "fid", "--real", real, "--fake", fake, "--save-stats", str(file))
    assert code == 2 and "exists" in err and file.read_bytes() == before
    saved = tmp_path / "sub" / "saved.npz"
    assert _run(capsys, "fid", "--real", real, "--fake", fake, "--save-stats", str(saved))[0] == 0
    with np.load(saved, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["sigma"], arrays["sigma"])
    assert _run(capsys, "stats", fake, "--out", str(file), "--overwrite")[0] == 0
    with np.load(file, allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["n"] == 20
    assert not list(tmp_path.glob("*.part"))


def test_stats_files_that_do_not_fit_are_refused(folders, tmp_path, capsys):
    fake = str(folders / "fake")
    good = tmp_path / "good.npz"
    assert _run(capsys, "stats", str(folders / "real"), "--out", str(good))[0] == 0
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))

    def variant(name, **changes):
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{**arrays, "meta": np.array(json.dumps({**meta, **changes}))})
        return str(path)

    cases = [
        (variant("space", features="inception", protocol="pytorch-fid"), "holds inception features (pytorch-fid), but "
         "this run uses toy"),
        (variant("weights", weights_sha256="0" * 64), "other toy weights"),
        (variant("format", format="something-else/3"), "format 'something-else/3'"),
    ]
    plain = tmp_path / "pytorch_fid.npz"  # pytorch-fid's --save-stats layout: mu and sigma only
    np.savez(plain, mu=arrays["mu"], sigma=arrays["sigma"])
    cases.append((str(plain), "no record of its feature space"))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"features": "toy"}], dtype=object))  # would need pickle to read
    cases.append((str(pickled), "allow_pickle=False"))
    cases.append((str(tmp_path / "absent.npz"), "no such stats file"))
    for file, message in cases:
        code, _, err = _run(capsys, "fid", "--real", file, "--fake", fake)
        assert code == 2 and message in err, (file, err)

    code, _, err = _run(capsys, "fid", "--real", str(good), "--fake", fake, "--save-stats", str(tmp_path / "x.npz"))
    assert code == 2 and "already a stats file" in err
    code, _, err = _run(capsys, "stats", fake, "--out", str(tmp_path / "stats.pkl"))
    assert code == 2 and "stats files are .npz" in err
    code, _, err = _run(capsys, "is", "--fake", fake, "--save-stats", str(tmp_path / "y.npz"))
    assert code == 2 and "--save-stats is for fid and kid" in err
    code, _, err = _run(capsys, "stats", fake)
    assert code == 2 and "--out FILE.npz" in err


def random_inception_state() -> dict:
    """Random weights with the FID Inception file's keys (torchvision Inception3, 1008 classes, no aux head),
    He-scaled so activations stay O(1) and every feature is exercised."""
    from torchvision.models import inception_v3

    g = torch.Generator().manual_seed(0)
    state = {}
    net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    for key, v in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = v
        elif v.dim() > 1:
            state[key] = torch.randn(v.shape, generator=g) * math.sqrt(2 / v[0].numel())
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(v.shape, generator=g) * 0.1
    return state


def test_inception_statistics_match_pytorch_fid(tmp_path, capsys, monkeypatch):
    """The pytorch-fid protocol end to end: our worker-side resize to 299 (downsampling, where an antialiased
    resize would differ) and the FID Inception give pytorch-fid's own mu and sigma for the same files and
    weights; pytorch-fid reads our stats file."""
    from pytorch_fid.fid_score import compute_statistics_of_path, get_activations
    from pytorch_fid.inception import InceptionV3

    images = tmp_path / "images"
    assert main(["data", "toy", "--n", "4", "--size", "320", "--seed", "3", "--out", str(images)]) == 0  # > 299
    capsys.readouterr()
    weights = tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    weights.parent.mkdir(parents=True)
    torch.save(random_inception_state(), weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # pytorch-fid finds the file there: no download

    out = tmp_path / "inception.npz"
    # Both sides see the same batch of 4 (batch composition changes float32 kernels' round-off).
    code, report, _ = _run(capsys, "stats", str(images), "--features", str(weights), "--out", str(out), "--json",
                           "--batch", "4")
    assert code == 0 and json.loads(report)["protocol"] == "pytorch-fid" and json.loads(report)["d"] == 2048
    reference = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    mu, sigma = compute_statistics_of_path(str(images), reference, 4, 2048, "cpu", num_workers=0)
    files = sorted(images.glob("*.png"))
    theirs = get_activations(files, reference, 4, 2048, "cpu", num_workers=0)  # (n, 2048) float32
    with np.load(out, allow_pickle=False) as z:
        ours = z["features"]
        assert np.abs(z["mu"]).max() > 0.1  # the random network's features are not degenerate
        # The features agree to float32 round-off of the 299-pixel resize and the network...
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * scale)
        # ... and mu and sigma to what that difference can move them by, a bound derived from it,
        # not a fixed rtol: covariance entries that nearly cancel have no relative precision.
        # d sigma_ij = sum_k (da_ki b_kj + a_ki db_kj) / (n - 1) for centred features a, b.
        n, delta = len(ours), np.abs(ours.astype(np.float64) - theirs).max()
        centred = np.abs(theirs - theirs.mean(0)).max()
        bound = 2 * (2 * n / (n - 1) * (centred + delta) * delta) + 1e-12 * np.abs(sigma).max()  # 2x margin
        np.testing.assert_allclose(z["mu"], mu, rtol=0, atol=2 * delta + 1e-12)
        np.testing.assert_allclose(z["sigma"], sigma, rtol=0, atol=bound)
        # and the statistics are those of the features, computed in float64 (closed form)
        np.testing.assert_allclose(z["sigma"], np.cov(ours.astype(np.float64), rowvar=False), rtol=1e-10,
                                   atol=1e-12 * np.abs(sigma).max())
    mu2, sigma2 = compute_statistics_of_path(str(out), None, 4, 2048, "cpu")  # pytorch-fid reads mu and sigma
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(mu2, z["mu"])
        np.testing.assert_array_equal(sigma2, z["sigma"])
