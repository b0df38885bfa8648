"""`gen score fid|kid|is|lpips` on folders (toy judge features), and how images are read: worker threads,
mixed sizes, unreadable files, one JSON object."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import metrics
from gen.cli import main
from gen.pipeline import WEIGHTS_DIR
from metrics.toy_judge import ImageJudge

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    for name, seed in (("real", 0), ("fake", 9)):
        assert main(["data", "toy", "--n", "40", "--size", "32", "--seed", str(seed), "--out", str(root / name)]) == 0
    return root


def _run(capsys, *argv):
    code = main(["score", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.filterwarnings("ignore:covariance of n=40")  # the reference computation below: 40 samples, d=128
def test_fid_equals_the_frechet_distance_of_judge_features(folders, capsys):
    code, out, err = _run(capsys, "fid", "--real", str(folders / "real"), "--fake", str(folders / "fake"), "--json")
    assert code == 0 and err.count("n <= d") == 1  # 40 samples in 128 dimensions: the bias is named, once
    assert len(out.splitlines()) == 1  # exactly one JSON object
    report = json.loads(out)
    assert (report["metric"], report["n"], report["n_real"], report["dim"]) == ("fid", 40, 40, 128)
    assert report["features"] == "toy" and report["value"] == report["fid"] and report["protocol"]
    fid = json.loads(out)["fid"]
    judge = ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image").eval()

    def feats(folder):
        files = sorted((folder).glob("*.png"))
        x = torch.from_numpy(np.stack([np.asarray(Image.open(f)) for f in files])).permute(0, 3, 1, 2)
        with torch.no_grad():
            return judge.features(x.float() / 127.5 - 1).double()

    a, b = feats(folders / "real"), feats(folders / "fake")
    expected = metrics.frechet_distance(*metrics.feature_stats(a), *metrics.feature_stats(b))
    assert fid == pytest.approx(expected, rel=1e-6) and fid > 0
    code, out, _ = _run(capsys, "fid", "--real", str(folders / "real"), "--fake", str(folders / "real"), "--json")
    assert abs(json.loads(out)["fid"]) < 1e-4  # rank-deficient (n < d): round-off only


def test_kid_reports_mean_and_std(folders, capsys):
    code, out, _ = _run(capsys, "kid", "--real", str(folders / "real"), "--fake", str(folders / "fake"),
                        "--subsets", "5", "--subset-size", "20", "--json")
    report = json.loads(out)
    assert code == 0 and report["subset_size"] == 20 and report["kid_mean"] > 0 and report["kid_std"] >= 0


def test_errors(folders, tmp_path, capsys):
    code, _, err = _run(capsys, "is", "--fake", str(folders / "fake"), "--features", str(tmp_path / "none.pth"))
    assert code == 2 and "inception" in err.lower()
    one = tmp_path / "one"
    assert main(["data", "toy", "--n", "1", "--size", "8", "--out", str(one)]) == 0
    code, _, err = _run(capsys, "fid", "--real", str(one), "--fake", str(folders / "fake"))
    assert code == 2 and "at least 2" in err
    code, _, err = _run(capsys, "ssim", "--real", str(one))
    assert code == 2 and "unknown metric 'ssim'" in err
    real, fake = str(folders / "real"), str(folders / "fake")
    code, _, err = _run(capsys, "fid", "--real", real, "--fake", fake, "--workers", "0")
    assert code == 2 and "--workers must be between 1 and 64, got 0" in err
    code, _, err = _run(capsys, "fid", real, fake)
    assert code == 2 and "takes its folders as --real/--fake" in err


def test_threads_batches_mixed_sizes_and_unreadable_files(folders, tmp_path, capsys):
    real = str(folders / "real")
    args = ("fid", "--real", real, "--fake", str(folders / "fake"), "--json")
    _, one, err = _run(capsys, *args, "--workers", "1", "--batch", "7")
    _, many, _ = _run(capsys, *args, "--workers", "3", "--batch", "64")
    assert json.loads(one)["fid"] == pytest.approx(json.loads(many)["fid"], rel=1e-9)  # order and batching kept
    assert "more than one size" not in err

    mixed = tmp_path / "mixed"  # loose images, a few at another size: resized by the judge's rule, said once
    mixed.mkdir()
    for k, f in enumerate(sorted((folders / "fake").glob("*.png"))):
        image = Image.open(f)
        (image.resize((48, 40)) if k % 3 == 0 else image).save(mixed / f.name)
    code, out, err = _run(capsys, "fid", "--real", real, "--fake", str(mixed), "--json")
    assert code == 0 and err.count("more than one size") == 1 and "48x40" in err and "antialiased" in err
    assert json.loads(out)["fid"] != pytest.approx(json.loads(many)["fid"], rel=1e-3)  # the resized images count

    (mixed / "broken.png").write_bytes(b"not a png")
    code, _, err = _run(capsys, "fid", "--real", real, "--fake", str(mixed), "--workers", "2")
    assert code == 2 and "broken.png" in err and "could not read image" in err


def test_lpips_pairs_same_named_images(folders, tmp_path, capsys, monkeypatch):
    import torchvision

    from metrics.reconstruction import lpips, lpips_network
    from metrics.weights import REGISTRY

    for var in ("GEN_WEIGHTS", "TORCH_HOME", "HF_HUB_CACHE"):  # empty caches
        monkeypatch.setenv(var, str(tmp_path / var))
    names = sorted(p.name for p in (folders / "real").glob("*.png"))[:10]
    for side in ("real", "fake"):  # ten same-named pairs, listed in another order in each folder
        (tmp_path / side).mkdir()
        for n in (names if side == "real" else names[::-1]):
            (tmp_path / side / n).write_bytes((folders / side / n).read_bytes())
    real, fake = str(tmp_path / "real"), str(tmp_path / "fake")
    code, _, err = _run(capsys, "lpips", real, fake)
    assert code == 2 and REGISTRY["alexnet"].filename in err and "Looked in" in err  # the registry's error

    torch.manual_seed(0)
    weights = tmp_path / "alexnet.pth"  # random weights in torchvision's layout
    torch.save({k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")},
               weights)
    cached = tmp_path / "GEN_WEIGHTS" / REGISTRY["alexnet"].filename
    cached.parent.mkdir()
    cached.write_bytes(weights.read_bytes())  # under the upstream name in a cache: hash-checked, refused
    code, _, err = _run(capsys, "lpips", real, fake)
    assert code == 2 and "7be5be79" in err
    code, out, _ = _run(capsys, "lpips", real, real, "--weights", str(weights), "--json")  # named: used as given
    assert code == 0 and json.loads(out)["pairs"] == 10 and abs(json.loads(out)["lpips_mean"]) < 1e-6
    code, out, _ = _run(capsys, "lpips", real, fake, "--weights", str(weights), "--json", "--batch", "4")
    report = json.loads(out)

    network = lpips_network(weights=weights)
    load = lambda f: torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
    with torch.no_grad():
        values = torch.cat([lpips(network, load(folders / "real" / n)[None], load(folders / "fake" / n)[None])
                            for n in names]).double()
    assert code == 0 and report["n"] == 10 and report["lpips_mean"] > 0.01
    assert report["lpips_mean"] == pytest.approx(values.mean().item(), rel=1e-6)
    assert report["lpips_std"] == pytest.approx(values.std().item(), rel=1e-5)
    code, _, err = _run(capsys, "lpips", real)
    assert code == 2 and "two folders" in err


@pytest.mark.filterwarnings("ignore:covariance of n=40")
def test_the_python_api_gives_the_command_lines_numbers(folders, capsys):
    from gen import scoring
    from gen.errors import GenError

    real, fake = folders / "real", folders / "fake"
    _, out, _ = _run(capsys, "fid", "--real", str(real), "--fake", str(fake), "--json")
    assert scoring.fid(real, fake) == json.loads(out)["fid"]
    _, out, _ = _run(capsys, "kid", "--real", str(real), "--fake", str(fake), "--subsets", "20", "--json")
    cli = json.loads(out)
    assert scoring.kid(str(real), str(fake), subsets=20) == (cli["kid_mean"], cli["kid_std"])
    stats = folders / "api" / "real.npz"
    assert scoring.score("stats", real, out=stats)["value"] == str(stats) and stats.is_file()
    assert scoring.fid(stats, fake) == pytest.approx(scoring.fid(real, fake), rel=1e-9)
    with pytest.raises(GenError, match="unknown option 'subset' for gen.scoring.score; known: .*subsets"):
        scoring.kid(real, fake, subset=3)
