"""The cascade: a base pipeline then super-resolution stages, as one model (tiny random
models: the mechanism, not the quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import models
from gen.pipeline.cascade import Cascade
from gen.cli import main
from gen.errors import GenError
from gen.pipeline import Pipeline, SamplingDefaults
from gen.pipeline.superres import SuperResolution
from samplers import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _stage(scale: int, seed: int) -> SuperResolution:
    torch.manual_seed(seed)
    net = models.create("sr-unet-tiny", sample_size=8)
    with torch.no_grad():  # zero-initialised output layers would make every input give the same image
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return SuperResolution(net, None, NoiseSchedule.create("cosine", prediction="v"),
                           SamplingDefaults(size=8, steps=2, cfg=1.0, scale=scale, sr_noise=0.2))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    torch.manual_seed(0)
    enc = models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                      embed_dim=32, context_length=16))
    net = models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim)
    base = Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=2))
    return {"root": root, "base": base, "x2": _stage(2, 1), "x4": _stage(4, 2),
            "base_dir": base.save_pretrained(root / "base"), "x2_dir": _stage(2, 1).save_pretrained(root / "x2"),
            "x4_dir": _stage(4, 2).save_pretrained(root / "x4")}


def test_the_cascade_runs_the_base_then_each_stage_and_stops_at_a_size(parts):
    cascade = Cascade(parts["base"], [parts["x2"], parts["x4"]])
    assert cascade.sizes == [8, 16, 64] and cascade.defaults.size == 64
    full = cascade.generate(["a cat"], [3])
    assert full.shape == (1, 3, 64, 64)
    base = parts["base"].generate(["a cat"], [3])
    assert torch.equal(cascade.generate(["a cat"], [3], size=8), base)
    by_hand = parts["x4"].upscale(parts["x2"].upscale(base, [3]), [3])
    assert torch.equal(full, by_hand)  # the stages in order, each seeded by the image's seed
    assert cascade.generate(["a cat"], [3], size=16).shape[-1] == 16
    with pytest.raises(GenError, match="draws 8, 16, 64 pixels"):
        cascade.generate(["a cat"], [3], size=32)
    assert not torch.equal(full, cascade.generate(["a cat"], [3], sr_noise=0.7))


def test_a_cascade_folder_round_trips_and_loads_through_pipeline(parts, tmp_path):
    cascade = Cascade(parts["base"], [parts["x4"]])
    folder = cascade.save_pretrained(tmp_path / "c")
    index = json.loads((folder / "model_index.json").read_text())
    assert index == {"_class": "Cascade", "kind": "image", "format": 1, "stages": ["base", "sr-1"]}
    loaded = Pipeline.from_pretrained(str(folder))
    assert isinstance(loaded, Cascade) and loaded.sizes == [8, 32]
    assert torch.equal(loaded.generate(["a dog"], [0]), cascade.generate(["a dog"], [0]))
    (folder / "model_index.json").write_text(json.dumps({**index, "stages": ["../base"]}))
    with pytest.raises(GenError, match="must list the stage subfolders"):
        Pipeline.from_pretrained(str(folder))
    (folder / "model_index.json").write_text(json.dumps({**index, "format": 7}))
    with pytest.raises(GenError, match="folder format 7; this gen reads format 1"):
        Pipeline.from_pretrained(str(folder))


def test_stages_that_do_not_chain_are_refused(parts):
    with pytest.raises(GenError, match="starts with a text-to-image pipeline"):
        Cascade(parts["x2"], [parts["x4"]])
    with pytest.raises(GenError, match="not a super-resolution stage"):
        Cascade(parts["base"], [parts["base"]])
    odd = SuperResolution(models.create("sr-unet-tiny", in_channels=4, sample_size=8), None,
                          NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(scale=2, sr_noise=0.1))
    with pytest.raises(GenError, match="takes 4-channel images but the stage before it gives 3"):
        Cascade(parts["base"], [odd])


def test_gen_cascade_then_gen_image_writes_the_last_size_and_from_regenerates_it(parts, tmp_path, capsys):
    out = tmp_path / "mine"
    assert main(["cascade", str(parts["base_dir"]), str(parts["x2_dir"]), str(parts["x4_dir"]), "--out",
                 str(out)]) == 0
    assert "8 -> 16 -> 64 pixels" in capsys.readouterr().out
    png = tmp_path / "cat.png"
    assert main(["image", "a cat", "--model", str(out), "--out", str(png), "--sr-noise", "0.3", "--device",
                 "cpu"]) == 0
    capsys.readouterr()
    meta = json.loads(Image.open(png).text["gen"])
    assert Image.open(png).size == (64, 64) and meta["size"] == 64 and meta["sr_noise"] == 0.3
    assert [s["scale"] for s in meta["stages"]] == [2, 4] and all(s["sr_noise"] == 0.3 for s in meta["stages"])
    again = tmp_path / "again.png"
    assert main(["image", "--from", str(png), "--out", str(again), "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(png)))
    small = tmp_path / "small.png"
    assert main(["image", "a cat", "--model", str(out), "--size", "16", "--out", str(small), "--device", "cpu"]) == 0
    assert Image.open(small).size == (16, 16) and len(json.loads(Image.open(small).text["gen"])["stages"]) == 1


def test_cascade_flags_on_a_single_pipeline_are_one_line(parts, tmp_path, capsys):
    code = main(["image", "a cat", "--model", str(parts["base_dir"]), "--sr-noise", "0.2", "--out",
                 str(tmp_path / "x.png"), "--device", "cpu"])
    assert code == 2 and "--sr-noise is for a cascade" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    code = main(["cascade", str(parts["x2_dir"]), str(parts["x4_dir"]), "--out", str(tmp_path / "c")])
    assert code == 2 and "super-resolution stage" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_gen_eval_image_judges_the_cascade_output(parts, tmp_path, capsys):
    cascade = Cascade(parts["base"], [parts["x4"]]).save_pretrained(tmp_path / "c")
    assert main(["eval", "image", "--model", str(cascade), "--n", "4", "--clip", "none", "--json",
                 "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size"] == 32 and report["n"] == 4  # the cascade's output, read by the judges resized
    assert Image.open(next((tmp_path / "eval").glob("**/*.png"))).size == (32, 32)


def test_a_cascade_can_name_shipped_stages_instead_of_copying_them(parts, tmp_path):
    shipped = Pipeline.from_pretrained("toy-image-dit-ft")
    folder = Cascade(shipped, [parts["x4"]]).save_pretrained(tmp_path / "c", shipped=True)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["stages"] == [{"shipped": "toy-image-dit-ft"}, "sr-1"] and not (folder / "base").exists()
    loaded = Pipeline.from_pretrained(str(folder))
    assert loaded.sizes == [32, 128]
    assert all(torch.equal(a, b) for a, b in zip(loaded.base.denoiser.state_dict().values(),
                                                 shipped.denoiser.state_dict().values()))
    (folder / "model_index.json").write_text(json.dumps({**index, "stages": [{"shipped": "nope"}, "sr-1"]}))
    with pytest.raises(GenError, match="names the shipped pipeline 'nope', which is not installed"):
        Pipeline.from_pretrained(str(folder))


def test_precision_is_one_setting_for_every_stage_and_bf16_stays_close_to_fp32(parts):
    from gen.runtime import compute_precision

    cascade = Cascade(parts["base"], [parts["x2"]])
    cascade.precision = "fp32"
    assert {s.precision for s in (cascade.base, *cascade.stages)} == {"fp32"} and cascade.compute_precision == "fp32"
    exact = cascade.generate(["a cat"], [3])
    torch.manual_seed(0)
    assert torch.equal(exact, cascade.generate(["a cat"], [3]))  # fp32 is deterministic
    cascade.precision = "bf16"
    assert {s.compute_precision for s in (cascade.base, *cascade.stages)} == {"bf16"}
    rounded = cascade.generate(["a cat"], [3])
    # bf16 keeps 8 mantissa bits: a few 1e-3 per layer, through 2 + 2 denoiser calls
    assert 0 < (rounded - exact).abs().max() < 0.1
    cascade.precision = "auto"
    assert cascade.compute_precision == compute_precision("auto", torch.device("cpu"))
    parts["base"].precision = parts["x2"].precision = "auto"


def test_compute_precision_resolves_auto_and_refuses_other_values():
    from gen.runtime import autocast, compute_precision

    cpu = torch.device("cpu")
    assert compute_precision("fp32", cpu) == "fp32" and compute_precision("bf16", cpu) == "bf16"
    bf16_cpu = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert compute_precision("auto", cpu) == ("bf16" if bf16_cpu else "fp32")
    with autocast("bf16", cpu):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with autocast("fp32", cpu):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    with pytest.raises(GenError, match="--precision must be one of auto, bf16, fp32, got 'fp16'"):
        compute_precision("fp16", cpu)


def test_a_cascade_keeps_its_own_sampling_defaults_for_its_base(tmp_path):
    """The shipped cascade samples its base faster than the base's own folder says (issue 16's
    warm time); the override lives in the cascade's model_index.json and round-trips."""
    from gen.pipeline import Cascade, Pipeline

    cascade = Pipeline.from_pretrained("default")
    assert isinstance(cascade, Cascade) and cascade.base_defaults == {"sampler": "dpm++2m", "steps": 12}
    assert (cascade.base.defaults.sampler, cascade.base.defaults.steps) == ("dpm++2m", 12)
    cascade.set_base_defaults(steps=8)
    assert Pipeline.from_pretrained("toy-image-dit-ft").defaults.steps == 12  # the base's own folder is untouched
    again = Cascade.from_pretrained(str(cascade.save_pretrained(tmp_path / "mine", shipped=True)))
    assert (again.base.defaults.sampler, again.base.defaults.steps) == ("dpm++2m", 8)
    with pytest.raises(GenError, match="'stepz' is not a sampling default"):
        again.set_base_defaults(stepz=3)
