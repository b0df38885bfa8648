"""Snapshots of a run (`--snapshot-every`) and the learning curve drawn from them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from gen.cli import main
from gen.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import learning_curve  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_snapshots_then_a_curve_of_judge_figures_against_samples_seen(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "image", "--model", "dit-tiny", "--size", "16", "--steps", "4", "--batch", "2",
                 "--n", "8", "--sample-every", "0", "--snapshot-every", "2", "--lr", "0.01", "--out", str(run)]) == 0
    found = learning_curve.snapshots(run)
    assert [step for step, _ in found] == [2, 4]
    early, late = (Pipeline.from_pretrained(str(p)).denoiser.state_dict() for _, p in found)
    assert any(not torch.equal(early[k], late[k]) for k in early)  # two different points of training
    final = Pipeline.from_pretrained(str(run / "pipeline")).denoiser.state_dict()
    assert all(torch.equal(final[k], late[k]) for k in final)  # the last snapshot is the exported EMA
    result = learning_curve.curve(run, n=4, device="cpu")
    assert [p["samples"] for p in result["points"]] == [4, 8] and result["kind"] == "image"
    for point in result["points"]:  # the judge's figures: "all" right, over the prompts it read
        assert point["generated"]["n"]["all"] > 0 and 0 <= point["generated"]["all"] <= 1
    json.dumps(result)
