"""Bad input, every subcommand: one line `gen: error: ...`, exit status 2, no traceback, and
nothing written or changed on disk.

Each case is (argv, a phrase the line must hold). Placeholders in {braces} name files the
`world` fixture makes: tiny pipelines, a dataset, a trained run and damaged copies of them.
Running as root, a read-only folder does not stop a write, so outputs that cannot be
written are paths under an existing file.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import models
from gen.cli import main
from gen.pipeline import Pipeline, SamplingDefaults, VideoPipeline
from samplers import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT_TOML = """
sample_every = 0
[text_encoder]
arch = "tiny"
hash_vocab = 512
width = 32
layers = 1
heads = 2
embed_dim = 32
"""


def _encoder():
    return models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                       embed_dim=32, context_length=16))


def _png_with(path: Path, text: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("gen", text)
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


class _Anything:  # pickled below: loading it would run code, so every loader must refuse it
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    enc = _encoder()
    schedule = NoiseSchedule.create("cosine", prediction="v")
    image_net = models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim)
    image = Pipeline(image_net, enc, schedule, SamplingDefaults(size=8, steps=2)).save_pretrained(root / "image")
    video_net = models.create("video-dit-tiny", sample_size=8, frames=4, text_dim=enc.dim, pooled_dim=enc.pooled_dim)
    video = VideoPipeline(video_net, enc, schedule,
                          SamplingDefaults(size=8, steps=2, frames=4, fps=2.0)).save_pretrained(root / "video")
    ds, clips = root / "ds", root / "clips"
    assert main(["data", "toy", "--n", "4", "--size", "16", "--out", str(ds)]) == 0
    assert main(["data", "toy-video", "--n", "2", "--size", "16", "--frames", "3", "--out", str(clips)]) == 0
    (root / "text.toml").write_text(TEXT_TOML)
    run = root / "run"
    assert main(["train", "image", "--config", str(root / "text.toml"), "--size", "8", "--steps", "2",
                 "--batch", "2", "--n", "4", "--ckpt-every", "1", "--out", str(run), "--no-bf16"]) == 0
    vae = root / "vae"
    models.create_vae(in_channels=3).save_pretrained(vae)
    from gen.pipeline.superres import SuperResolution

    sr = SuperResolution(models.create("sr-unet-tiny", sample_size=8), None, schedule,
                         SamplingDefaults(size=8, steps=2, cfg=1.0, scale=4, sr_noise=0.2)).save_pretrained(root / "sr")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "small.png")
    Image.fromarray(np.zeros((4, 1100, 3), np.uint8)).save(root / "wide.png")

    w = {"root": str(root), "image": str(image), "video": str(video), "ds": str(ds), "clips": str(clips),
         "run": str(run), "vae": str(vae), "text": str(root / "text.toml"), "sr": str(sr),
         "small": str(root / "small.png"), "wide": str(root / "wide.png")}

    def file(name: str, content: bytes | str) -> str:
        path = root / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    w["file"] = file("plain.txt", "not a folder\n")
    w["existing_npz"] = file("taken.npz", b"")
    w["garbage"] = file("garbage.bin", bytes(range(256)) * 4)
    w["binary"] = file("binary.txt", b"\xff\xfe\x00bad" * 10)
    w["pickle"] = file("evil.pt", pickle.dumps(_Anything()))
    w["notpng"] = file("notpng.png", "this is text, not a PNG")
    w["bad_json"] = file("bad.json", '{"lr": 0.1,')
    w["bad_toml"] = file("bad.toml", "lr = = 1\n")
    w["bad_yaml"] = file("bad.yaml", "lr: [1, 2\n")
    w["wrong_types"] = file("types.toml", 'lr = "fast"\n')
    w["list_json"] = file("list.json", "[1, 2, 3]")
    w["prompts_empty"] = file("prompts.txt", "\n\n")
    np.savez(root / "objects.npz", mu=np.array([_Anything()], dtype=object))
    w["object_npz"] = str(root / "objects.npz")
    w["png_bad_json"] = str(_png_with(root / "badjson.png", "{not json"))
    w["png_hub"] = str(_png_with(root / "hub.png", json.dumps({"prompt": "x", "seed": 0, "model": "someone/model"})))
    w["png_seed"] = str(_png_with(root / "seed.png", json.dumps({"prompt": "x", "seed": 2**70, "model": image.name})))
    w["png_types"] = str(_png_with(root / "types.png", json.dumps({"prompt": 3, "seed": 0})))

    def damaged_copy(source: Path, name: str, relative: str, content: bytes | str) -> str:
        target = root / name
        shutil.copytree(source, target)
        path = target / relative
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(target)

    w["pipe_bad_index"] = damaged_copy(image, "p1", "model_index.json", "{")
    w["pipe_list_index"] = damaged_copy(image, "p2", "model_index.json", "[]")
    index = json.loads((image / "model_index.json").read_text())
    w["pipe_no_schedule"] = damaged_copy(image, "p3", "model_index.json",
                                         json.dumps({k: v for k, v in index.items() if k != "schedule"}))
    w["pipe_escape"] = damaged_copy(image, "p4", "model_index.json", json.dumps({**index, "denoiser": "../run"}))
    w["pipe_bad_weights"] = damaged_copy(image, "p5", "denoiser/model.safetensors", bytes(100))
    w["pipe_bad_defaults"] = damaged_copy(image, "p6", "model_index.json",
                                          json.dumps({**index, "defaults": {"bogus": 1}}))
    w["vae_bad_weights"] = damaged_copy(vae, "v1", "model.safetensors", b"\x00" * 64)
    w["vae_bad_config"] = damaged_copy(vae, "v2", "config.json", "{")
    step = "checkpoints/step-0000002"
    w["run_bad_model"] = damaged_copy(run, "r1", f"{step}/model.safetensors", b"\x00" * 64)
    w["run_bad_state"] = damaged_copy(run, "r2", f"{step}/state.json", '{"step": ')
    w["run_bad_optimizer"] = damaged_copy(run, "r3", f"{step}/optimizer.pt", pickle.dumps(_Anything()))
    w["run_truncated"] = damaged_copy(run, "r4", f"{step}/ema.safetensors", (run / step / "ema.safetensors")
                                      .read_bytes()[:100])
    w["ds_bad_meta"] = damaged_copy(ds, "d1", "metadata.jsonl", '{"file_name": "000000.png", "text": \n')
    w["ds_bad_image"] = damaged_copy(ds, "d2", "000001.png", b"\x89PNG\r\n\x1a\n broken")
    user = root / "user-folder"
    user.mkdir()
    (user / "mine.txt").write_text("precious\n")
    w["user"] = str(user)
    sd = root / "sd"
    sd.mkdir()
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    w["sd"] = str(sd)
    return w


T = "train image --config {text} --size 8 --steps 2 --batch 2 --n 4 --out {new}"
CASES = {
    "image": [
        ("image x --n 0", "--n must be between 1 and 64, got 0"),
        ("image x --n abc", "--n"),
        ("image x --seed 99999999999999999999", "--seed must be at most"),
        ("image x --seed -1", "--seed must be a non-negative integer"),
        ("image x --model {image} --sr-noise 0.2", "--sr-noise is for a cascade"),
        ("image x --model {image} --size 0", "--size must be"),
        ("image x --model {image} --steps 0", "--steps must be between 1 and 1000"),
        ("image x --model {image} --cfg nan", "--cfg must be between 0 and 50"),
        ("image x --model {image} --sampler bogus", "--sampler must be one of"),
        ("image x --model runs/typo", "no such folder"),
        ("image x --model {root}/imagee", "did you mean"),
        ("image x --model someone/model", "--download"),
        ("image x --model {image} --out x.jpg", "must be a .png file"),
        ("image x --model {image} --out {file}/x.png", "does not exist"),
        ("image x --model {image} --out {root}/missing/x.png", "does not exist"),
        ("image --from {notpng}", "could not read PNG"),
        ("image --from {root}/missing.png", "does not exist"),
        ("image --from {png_bad_json}", "not valid JSON"),
        ("image --from {png_hub}", "pass --download"),
        ("image --from {png_seed}", "seed"),
        ("image --from {png_types}", "prompt"),
        ("image x --model {pipe_bad_index}", "corrupt"),
        ("image x --model {pipe_list_index}", "not a JSON object"),
        ("image x --model {pipe_no_schedule}", "'schedule'"),
        ("image x --model {pipe_escape}", "must name a subfolder"),
        ("image x --model {pipe_bad_weights}", "cannot load"),
        ("image x --model {pipe_bad_defaults}", "corrupt"),
        ("image x --model {video}", "use it with `gen video`"),
        ("image x --model {user}", "not a model folder"),
        ("image x --dtype int8", "--dtype"),
        ("image x --precision fp16", "--precision"),
        ("image x --device tpu", "--device must be one of"),
        ("image x --bogus-flag", "unrecognized arguments"),
        ("image x --model {image} --n 65", "--n must be between 1 and 64, got 65"),
        ("image x --model {image} --negative", "expected one argument"),
        ("image --model {image}", "give a prompt"),
    ],
    "video": [
        ("video x --frames 100000", "--frames must be at most 1024"),
        ("video x --precision half", "--precision"),
        ("video x --size 100000", "--size must be at most 4096"),
        ("video x --model {video} --size 64", "--size must be between 1 and 32"),
        ("video x --model {video} --frames 64", "--frames must be at most 16"),
        ("video x --frames 0", "--frames must be a positive integer"),
        ("video x --fps 0", "--fps must be positive"),
        ("video x --fps inf", "--fps must be positive"),
        ("video x --fps nan", "--fps must be positive"),
        ("video x --out x.avi", "--out must end in .gif or .mp4"),
        ("video x --model {video} --init-image {notpng}", "not a readable image"),
        ("video x --model {video} --init-image {root}/missing.png", "does not exist"),
        ("video x --model {image}", "use it with `gen image`"),
        ("video x --model {video} --steps 5000", "--steps must be between 1 and 1000"),
        ("video x --format webm", "--format"),
        ("video x --model {video} --out {file}/clip.gif", "does not exist"),
        ("video x --model {pipe_bad_index}", "corrupt"),
        ("video x --size 0", "--size must be a positive integer"),
        ("video x --frames abc", "--frames must be an integer"),
        ("video", "the following arguments are required: prompt"),
    ],
    "train": [
        (T + " --weighting bogus", "--weighting must be one of uniform, min_snr, got 'bogus'"),
        (T + " --ckpt-every -1", "--ckpt-every must be a non-negative integer"),
        (T + " --log-every 0", "--log-every must be a positive integer"),
        (T + " --workers -1", "--workers must be a non-negative integer"),
        (T + " --batch 0", "--batch must be a positive integer"),
        (T + " --batch 100000", "--batch must be at most 65536"),
        (T.replace("--size 8", "--size 512") + " --batch 60000", "GiB"),
        (T + " --lr 0", "--lr must be a positive number"),
        (T + " --lr nan", "--lr must be a positive number"),
        (T + " --steps abc", "--steps"),
        (T + " --steps 0", "--steps must be a positive integer"),
        (T + " --size 0", "--size must be a positive integer"),
        (T + " --size 100000", "--size must be at most 4096"),
        (T + " --frames 0", "--frames must be a positive integer"),
        (T + " --max-minutes 0", "--max-minutes must be a positive number"),
        (T + " --ema-decay 1", "--ema-decay must be in [0, 1)"),
        (T + " --cond-drop 1", "--cond-drop must be in [0, 1)"),
        (T + " --model dit-enormous", "unknown model preset 'dit-enormous'"),
        (T + " --lr-schedule bogus", "--lr-schedule must be constant or cosine"),
        (T + " --prediction bogus", "--prediction"),
        (T + " --data {root}/missing", "missing"),
        (T + " --data {ds_bad_meta}", "metadata.jsonl"),
        (T + " --vae {root}/missing", "unknown VAE"),
        (T + " --vae {vae_bad_weights}", "corrupt"),
        ("train image --config {bad_json} --out {new}", "corrupt"),
        ("train image --config {bad_toml} --out {new}", "corrupt"),
        ("train image --config {bad_yaml} --out {new}", "yaml"),
        ("train image --config {wrong_types} --out {new}", "training option lr must be float, got 'fast'"),
        ("train image --config {list_json} --out {new}", "must hold a table"),
        ("train image --config {root}/missing.toml --out {new}", "does not exist"),
        ("train image --config {file} --out {new}", "--config must be a .yaml"),
        ("train image --config {text} --out {run}", "exists and is not empty"),
        ("train image --config {text} --out {file}", "exists and is a file"),
        ("train image --config {text} --out {file}/run", "cannot use"),
        ("train image --config {text} --out {new} --resume", "no checkpoint"),
        ("train image --out {run} --resume --lr 0.5", "--lr 0.5 (the run has"),
        ("train image --out {run} --resume --model dit-s/2", "--model 'dit-s/2'"),
        ("train video --out {run} --resume", "the training kind 'video'"),
        ("train image --out {run_bad_model} --resume", "damaged"),
        ("train image --out {run_bad_state} --resume", "corrupt"),
        ("train image --out {run_bad_optimizer} --resume", "damaged"),
        ("train image --out {run_truncated} --resume", "damaged"),
        ("train vae --factor 0 --out {new}", "--factor must be between 1 and 64"),
        ("train sr --scale 1 --size 8 --steps 1 --batch 2 --n 2 --out {new}", "--scale must be at least 2"),
        ("train sr --scale 4 --size 10 --steps 1 --batch 2 --n 2 --out {new}", "multiples of --scale 4"),
        ("train sr --crop 6 --size 16 --steps 1 --batch 2 --n 2 --out {new}", "multiples of --scale 4"),
        ("train sr --crop 32 --size 16 --model sr-unet-tiny --steps 1 --batch 2 --n 2 --out {new}",
         "--crop 32 is larger"),
        ("train sr --sr-noise 2 --size 8 --steps 1 --batch 2 --n 2 --out {new}", "--sr-noise must be between 0"),
        ("train sr --sr-aug-max -0.5 --size 8 --steps 1 --batch 2 --n 2 --out {new}", "--sr-aug-max must be between 0"),
        ("train sr --split test --size 8 --steps 1 --batch 2 --n 2 --data {ds} --out {new}", "--split test"),
        ("train sr --model dit-tiny --size 8 --steps 1 --batch 2 --n 2 --out {new}",
         "not a super-resolution U-Net"),
        ("train vae --latent-channels 0 --out {new}", "--latent-channels must be between 1 and 64"),
        ("train vae --recon-loss l3 --out {new}", "--recon-loss must be l1 or l2"),
        ("train vae --init {vae_bad_config} --size 8 --steps 1 --batch 2 --n 2 --out {new}", "corrupt"),
        ("train video --config {text} --model dit-tiny --size 8 --frames 2 --steps 1 --batch 2 --n 2 --out {new}",
         "is an image model"),
        ("train video --config {text} --init {root}/missing --size 8 --frames 2 --out {new}", "unknown model"),
        ("train bogus --out {new}", "invalid choice"),
        (T + " --image-ratio 0.5", "--image-ratio is for `gen train video`"),
        (T + " --threads 0", "--threads must be a positive integer"),
        (T + " --freeze-spatial", "--freeze-spatial needs"),
        ("train image --config {text}", "--out is required"),
        ("train image --out", "expected one argument"),
    ],
    "score": [
        ("score bogus", "unknown metric 'bogus'"),
        ("score fid --real {root}/missing --fake {ds}", "missing"),
        ("score fid --real {garbage}.npz --fake {ds}", "no such stats file"),
        ("score fid --real {existing_npz} --fake {ds}", "not a readable .npz"),
        ("score fid --real {object_npz} --fake {ds}", "not a readable .npz"),
        ("score fid --real {ds} --fake {ds_bad_image}", "000001.png"),
        ("score fid --real {ds} --fake {ds} --features {pickle}", "evil.pt"),
        ("score kid --real {ds} --fake {ds} --subsets 0", "--subsets must be a positive integer"),
        ("score kid --real {ds} --fake {ds} --subset-size 1", "--subset-size must be at least 2"),
        ("score fid --real {ds} --fake {ds} --batch 0", "--batch must be a positive integer"),
        ("score fid --real {ds} --fake {ds} --workers 0", "--workers must be between 1 and 64"),
        ("score stats {ds} --out {existing_npz}", "exists; pass --overwrite"),
        ("score stats {ds} --out {root}/stats.txt", "stats files are .npz"),
        ("score stats {ds} --out {file}/x.npz", "cannot use"),
        ("score stats {ds}", "takes one folder and --out"),
        ("score lpips {ds} {ds} --weights {pickle}", "evil.pt"),
        ("score lpips {ds} {ds} --net resnet", "--net"),
        ("score fvd --real {clips} --fake {clips} --features {pickle}", "evil.pt"),
        ("score fvd --real {clips} --fake {clips} --frames 0", "--frames must be a positive integer"),
        ("score clip --fake {ds} --prompts {binary}", "binary.txt"),
        ("score fid --real {ds} --fake {ds} --save-stats {existing_npz}", "exists"),
        ("score is --fake {ds}", "weights 'inception-fid' not found"),
        ("score fid --fake {ds}", "--real"),
        ("score fid --real {ds} --fake {ds} --batch x", "--batch must be an integer"),
    ],
    "eval": [
        ("eval image --n 0", "--n must be"),
        ("eval image --n 1", "--n must be between 2"),
        ("eval image --model {root}/missing --n 2", "unknown model"),
        ("eval image --model {image} --n 2 --out {ds}", "exists and is not empty"),
        ("eval image --model {image} --n 2 --out {file}/eval", "does not exist"),
        ("eval image --model {image} --n 2 --prompts {root}/missing.txt", "does not exist"),
        ("eval image --model {image} --n 2 --prompts {binary}", "binary.txt"),
        ("eval image --model {image} --n 2 --prompts {prompts_empty}", "holds no prompts"),
        ("eval video --model {video} --n 2 --prompts {text}", "gen eval video judges toy clip captions"),
        ("eval vae --model {vae_bad_weights}", "corrupt"),
        ("eval vae --model {vae_bad_config}", "corrupt"),
        ("eval vae --model {vae} --batch 0", "--batch must be a positive integer"),
        ("eval vae --model {vae} --size 0", "--size must be a positive integer"),
        ("eval bogus", "not built yet"),
        ("eval judge --n 1", "--n must be at least 2"),
    ],
    "data": [
        ("data toy --out {new} --size 0", "--size"),
        ("data toy --out {new} --size 100000", "--size"),
        ("data toy --out {new} --n 0", "--n"),
        ("data toy --out {new} --n -5", "--n"),
        ("data bogus --out {new}", "unknown dataset kind 'bogus'"),
        ("data toy --out {file}", "exists and is a file"),
        ("data toy --out {ds}", "exists and is not empty"),
        ("data toy --out {user} --overwrite", "not a dataset folder written by gen"),
        ("data toy-video --out {new} --frames 0", "--frames"),
        ("data toy-video --out {new} --fps 0", "--fps"),
        ("data toy-video --out {new} --format avi", "--format"),
        ("data toy --out {file}/sub --n 2 --size 8", "cannot use"),
        ("data toy --out {new} --size abc", "--size"),
        ("data toy --n 2", "the following arguments are required: --out"),
    ],
    "models": [
        ("models --bogus", "unrecognized arguments"),
    ],
    "cascade": [
        ("cascade {image} --out {new}", "the following arguments are required: SR"),
        ("cascade {image} {sr}", "the following arguments are required: --out"),
        ("cascade {sr} {sr} --out {new}", "is a super-resolution stage"),
        ("cascade {image} {image} --out {new}", "is a text-to-image model"),
        ("cascade {image} {sr} --out {ds}", "exists and is not an empty folder"),
        ("cascade {image} {root}/missing --out {new}", "unknown model"),
        ("cascade {image} {sr} --out {file}/x", "is not a folder"),
    ],
    "export": [
        ("export {image} --out {new}", "pass --diffusers"),
        ("export {image} --diffusers", "the following arguments are required: --out"),
        ("export {image} --diffusers --out {user}", "exists and is not empty"),
        ("export {root}/missing --diffusers --out {new}", "unknown model"),
        ("export {image} --diffusers --out {new} --scheduler Bogus", "unknown diffusers scheduler 'Bogus'"),
        ("export {image} --diffusers --out {file}/x", "is not a folder"),
    ],
    "upscale": [
        ("upscale", "the following arguments are required: IMAGE"),
        ("upscale {small} --scale 2", "upscales by 4"),  # the shipped stage
        ("upscale {notpng} --model {sr}", "not an image file"),
        ("upscale {root}/missing.png --model {sr}", "no such file"),
        ("upscale {small} --model {sr} --scale 2", "upscales by 4"),
        ("upscale {small} --model {sr} --scale 1", "--scale must be between 2 and 16"),
        ("upscale {small} {small} --model {sr} --out {root}/x.png", "is one file but 2 images"),
        ("upscale {small} --model {sr} --out {root}/x.jpg", "--out must be a .png"),
        ("upscale {small} --model {sr} --out {root}/missing/", "does not exist"),
        ("upscale {small} --model {image}", "is a text-to-image model"),
        ("upscale {small} --model {root}/missing", "unknown model"),
        ("upscale {small} --model {sr} --sr-noise 2", "--sr-noise"),
        ("upscale {small} --model {sr} --steps 0", "--steps"),
        ("upscale {small} --model {sr} --sampler bogus", "--sampler must be one of"),
        ("upscale {wide} --model {sr}", "past 4096 pixels"),
    ],
    "global": [
        ("--seed x models", "--seed"),
        ("bogus", "invalid choice"),
    ],
}
MISSING_PACKAGES = [  # (module made unimportable, argv, phrase)
    ("av", "video x --model {video} --out {root}/clip.mp4", "gen[video]"),
    ("transformers", "image x --model {sd}", "gen[sd]"),
]


def _snapshot(*folders: Path) -> dict:
    """Every path below the folders; for a file, its size and modification time."""
    return {str(p): "folder" if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for f in folders for p in sorted(f.rglob("*"))}


def _check(world, tmp_path, capsys, monkeypatch, argv: str, phrase: str) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    new = tmp_path / "new"
    args = [a.format(**world, new=new) for a in argv.split()]
    before = _snapshot(Path(world["root"]), tmp_path)
    if args[0] not in ("bogus", "--seed") and "--device" not in args:
        args += ["--device", "cpu"]
    code = main(args)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("gen: error: "), err
    assert "Traceback" not in err
    assert phrase in lines[0], lines[0]
    assert _snapshot(Path(world["root"]), tmp_path) == before, "files were written or changed"
    assert not new.exists()


CASE_LIST = [(group, argv, phrase) for group, cases in CASES.items() for argv, phrase in cases]


@pytest.mark.parametrize("group, argv, phrase", CASE_LIST, ids=[f"{g}: {a}" for g, a, _ in CASE_LIST])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, tmp_path, capsys, monkeypatch, group, argv, phrase):
    _check(world, tmp_path, capsys, monkeypatch, argv, phrase)


@pytest.mark.parametrize("module, argv, phrase", MISSING_PACKAGES, ids=[m for m, _, _ in MISSING_PACKAGES])
def test_a_missing_optional_package_is_one_line_naming_it(world, tmp_path, capsys, monkeypatch, module, argv,
                                                          phrase):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if not installed
    _check(world, tmp_path, capsys, monkeypatch, argv, phrase)


def test_every_subcommand_has_bad_input_cases():
    from gen.cli import COMMANDS

    assert {name for name, _, _ in COMMANDS} <= set(CASES)
    assert len(CASE_LIST) + len(MISSING_PACKAGES) >= 150
