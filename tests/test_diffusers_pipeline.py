"""Diffusers Stable-Diffusion folders run with gen's samplers: checked against diffusers'
own StableDiffusionPipeline on tiny random components built here (nothing downloaded)."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from PIL import Image

from gen.cli import main
from gen.errors import GenError
from gen.pipeline import Pipeline

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

WORDS = ["cat", "red", "ball", "blue", "hat", "in", "the"]


def _tiny_tokenizer(folder):
    """A CLIP BPE tokenizer over single letters plus merges that make a few whole words."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    merges = []
    for word in WORDS:  # merge left to right: c a -> ca, ca t</w> -> cat</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _tiny_sd(tmp, scheduler_config: dict) -> diffusers.StableDiffusionPipeline:
    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(tmp / "vocab")
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4)
    vae = diffusers.AutoencoderKL(  # three blocks: 4x downsampling, scaling_factor 0.18215 (SD's)
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=4)
    with torch.no_grad():  # random weights with a text-dependent output: spread the U-Net's weights
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        clip_sample=False, steps_offset=1, **scheduler_config)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd")
    sd = _tiny_sd(tmp, {"set_alpha_to_one": True, "timestep_spacing": "leading"})
    sd.save_pretrained(tmp / "pipe", safe_serialization=True)
    return tmp / "pipe", sd


def _variant(sd_folder, tmp_path, **scheduler_changes):
    folder = tmp_path / "variant"
    shutil.copytree(sd_folder, folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **scheduler_changes}))
    return folder


@pytest.mark.parametrize("scheduler_changes", [
    {},  # leading spacing, eps prediction
    {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
])
def test_ddim_matches_diffusers_stable_diffusion_pipeline(sd_folder, tmp_path, scheduler_changes):
    folder, sd = sd_folder
    folder = _variant(folder, tmp_path, **scheduler_changes)
    pipe = Pipeline.from_pretrained(folder)
    pipe.precision = "fp32"  # compared with diffusers in float32
    assert pipe.defaults.size == 8 * 4 and pipe.defaults.spacing == scheduler_changes.get("timestep_spacing", "leading")
    ours = pipe.generate(["a red cat", "the blue ball"], seeds=[0, 1], steps=4, sampler="ddim", cfg=7.5)

    # diffusers, from the same folder. The folder says steps_offset=1 (SD's value, which
    # StableDiffusionPipeline enforces): diffusers' "leading" timesteps are then 751, ..., 1
    # where ours are 750, ..., 0 (gen ignores steps_offset), so the reference runs with
    # steps_offset=0. set_alpha_to_one=True: both end at alpha_bar = 1.
    ref_pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    ref_pipe.scheduler = diffusers.DDIMScheduler.from_config(ref_pipe.scheduler.config, steps_offset=0)
    assert ref_pipe.scheduler.config.set_alpha_to_one and not ref_pipe.scheduler.config.clip_sample
    # Image i starts from torch.randn seeded with seeds[i] (Pipeline.generate's rule), 4 x H/4 x W/4 latents.
    latents = torch.stack([torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in (0, 1)])
    ref = ref_pipe(["a red cat", "the blue ball"], num_inference_steps=4, guidance_scale=7.5, eta=0.0,
                   latents=latents, output_type="pt").images  # (2, 3, 32, 32) in [0, 1]
    assert ours.shape == ref.shape == (2, 3, 32, 32)
    torch.testing.assert_close((ours + 1) / 2, ref, atol=1e-4, rtol=0)
    # Not vacuous: the pixels are not saturated and the prompt and guidance change them.
    assert 0.05 < ((ours + 1) / 2).std() and (ours.abs() < 0.99).float().mean() > 0.5
    unguided = pipe.generate(["a red cat"], seeds=[0], steps=4, cfg=1.0)
    other = pipe.generate(["the blue ball"], seeds=[0], steps=4)
    assert (unguided - ours[:1]).abs().max() > 1e-2 and (other - ours[:1]).abs().max() > 1e-2


def test_gen_image_cli_on_a_diffusers_folder(sd_folder, tmp_path, capsys):
    folder, _ = sd_folder
    code = main(["image", "a cat", "--model", str(folder), "--steps", "2", "--out", str(tmp_path / "cat.png")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    image = Image.open(tmp_path / "cat.png")
    assert image.size == (32, 32)  # unet sample_size 8 x the VAE's factor 4
    meta = json.loads(image.text["gen"])
    assert meta["cfg"] == 7.5 and meta["steps"] == 2 and meta["sampler"] == "ddim"


def test_a_hub_id_not_in_the_cache_is_one_fast_clear_error(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network in tests, whatever the machine has
    start = time.perf_counter()
    with pytest.raises(GenError, match="no such folder here.* not in the local cache: pass --download") as err:
        Pipeline.from_pretrained("someone/no-such-pipeline")  # local only unless asked
    assert "hf download someone/no-such-pipeline" in str(err.value)
    with pytest.raises(GenError, match="'someone/no-such-pipeline' is not a local folder and not in the Hugging "
                                       "Face cache .*, and HF_HUB_OFFLINE is set"):
        Pipeline.from_pretrained("someone/no-such-pipeline", local_files_only=False)
    code = main(["image", "a cat", "--model", "someone/no-such-pipeline", "--out", str(tmp_path)])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1
    assert time.perf_counter() - start < 5
    assert not list(tmp_path.glob("*.png"))


def test_a_hub_id_in_the_cache_loads_offline(sd_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0" * 40  # the Hugging Face cache layout: refs/main names a snapshot folder
    repo = tmp_path / "hub-cache" / "models--someone--tiny-sd"
    shutil.copytree(sd_folder[0], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pipe = Pipeline.from_pretrained("someone/tiny-sd")
    assert pipe.name == "someone/tiny-sd" and pipe.generate(["a cat"], [0], steps=1).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("missing", ["vae/diffusion_pytorch_model.safetensors",
                                     "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"])
def test_a_folder_missing_weights_names_the_file(sd_folder, tmp_path, missing):
    folder = tmp_path / "broken"
    shutil.copytree(sd_folder[0], folder)
    (folder / missing).unlink()
    with pytest.raises(GenError, match=f"missing {folder / missing}"):
        Pipeline.from_pretrained(folder)
    (folder / missing).with_suffix(".bin").write_bytes(b"pickle")
    with pytest.raises(GenError, match="only pickled weights .* never loads"):
        Pipeline.from_pretrained(folder)


def test_other_diffusers_layouts_are_refused_by_name(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}))
    with pytest.raises(GenError, match="StableDiffusionXLPipeline.*Stable Diffusion layout"):
        Pipeline.from_pretrained(tmp_path)
