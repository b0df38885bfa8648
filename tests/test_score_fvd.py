"""`gen score fvd` on folders of clips: I3D features from a weights file, the protocol's checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from gen.cli import main
from gen.data.folders import VideoFolderDataset
from metrics.fvd import clip_features, fvd
from metrics.i3d import I3D
from test_fvd import randomize

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fvd")
    i3d = randomize(I3D(width=0.125))  # activations O(1) throughout
    weights = root / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in i3d.state_dict().items()}, str(weights))
    for name, seed in (("a", 0), ("b", 1)):
        assert main(["data", "toy-video", "--n", "3", "--frames", "16", "--size", "16", "--fps", "8",
                     "--seed", str(seed), "--out", str(root / name)]) == 0
    assert main(["data", "toy-video", "--n", "3", "--frames", "8", "--size", "16", "--out", str(root / "short")]) == 0
    return root, weights, i3d.eval()


def _score(capsys, *argv):
    code = main(["score", "fvd", *argv, "--json"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fvd_of_i3d_features_equals_the_library_on_the_same_clips(setup, capsys):
    root, weights, i3d = setup
    code, out, _ = _score(capsys, "--real", str(root / "a"), "--fake", str(root / "b"), "--features", str(weights))
    report = json.loads(out)
    assert code == 0 and report["n"] == 3 and report["dim"] == 400 and report["features"] == "i3d"
    clips = {k: torch.stack([VideoFolderDataset(root / k)[i]["video"] for i in range(3)]) for k in "ab"}
    with torch.no_grad():
        want = fvd(clip_features(i3d, clips["a"]), clip_features(i3d, clips["b"]))
    assert report["fvd"] == pytest.approx(want, rel=1e-6) and want > 0
    code, out, _ = _score(capsys, "--real", str(root / "a"), "--fake", str(root / "a"), "--features", str(weights))
    assert json.loads(out)["fvd"] == pytest.approx(0.0, abs=1e-6)


def test_fvd_refuses_short_clips_and_missing_weights(setup, capsys, tmp_path):
    root, weights, _ = setup
    code, _, err = _score(capsys, "--real", str(root / "short"), "--fake", str(root / "a"), "--features", str(weights))
    assert code == 2 and "8 frames" in err
    code, _, err = _score(capsys, "--real", str(root / "a"), "--fake", str(root / "b"), "--features", "i3d")
    assert code == 2 and "i3d_torchscript" in err
