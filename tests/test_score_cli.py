"""`gen score fid|kid|is` on folders, in the toy judge's feature space."""

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


def test_fid_equals_the_frechet_distance_of_judge_features(folders, capsys):
    code, out, err = _run(capsys, "fid", "--real", str(folders / "real"), "--fake", str(folders / "fake"), "--json")
    assert code == 0 and "n <= d" in err  # 40 samples in 128 dimensions: the bias is named
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
    code, _, err = _run(capsys, "fvd", "--real", str(one))
    assert code == 2 and "not built yet" in err
    code, _, err = _run(capsys, "ssim", "--real", str(one))
    assert code == 2 and "unknown metric 'ssim'" in err


def test_lpips_pairs_same_named_images(folders, tmp_path, capsys, monkeypatch):
    import torchvision

    from metrics import reconstruction

    code, _, err = _run(capsys, "lpips", str(folders / "real"), str(folders / "fake"))
    if reconstruction.lpips_network("cpu") is None:  # no AlexNet weights here: the error names the file
        assert code == 2 and "alexnet-owt-7be5be79.pth" in err
    weights = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), weights)
    monkeypatch.setattr(reconstruction, "alexnet_weights_path", lambda: weights)
    code, out, _ = _run(capsys, "lpips", str(folders / "real"), str(folders / "real"), "--json")
    assert code == 0 and json.loads(out)["pairs"] == 40 and abs(json.loads(out)["lpips_mean"]) < 1e-6
    code, out, _ = _run(capsys, "lpips", str(folders / "real"), str(folders / "fake"), "--json")
    assert code == 0 and json.loads(out)["lpips_mean"] > 0
    code, _, err = _run(capsys, "lpips", str(folders / "real"))
    assert code == 2 and "two folders" in err
