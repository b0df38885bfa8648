"""`gen export PIPELINE --diffusers --out DIR` / gen.pipeline.export.export_diffusers: each
exported part is loaded with diffusers or transformers and checked against gen's own
computation on the same inputs (tiny random models: the format, not the quality)."""

from __future__ import annotations

import dataclasses
import importlib
import json

import diffusers
import pytest
import torch
import transformers

import models
from gen.cli import main
from gen.errors import GenError
from gen.pipeline import Cascade, Pipeline, SamplingDefaults, SuperResolution, VideoPipeline, load
from gen.pipeline.export import export_diffusers
from gen.pipeline.superres import augment
from samplers import NoiseSchedule, make_timesteps

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]
PROMPTS = ["a red circle left of a blue square", "Hello, World!!  It's 3 o'clock", "café über naïve 日本",
           "many words " * 12, ""]


def _text(hash_vocab=512):
    return models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=hash_vocab, width=32, layers=2,
                                                       heads=2, embed_dim=24, context_length=16)).eval()


def _jitter(net):
    with torch.no_grad():  # zero-initialised output layers would make every input give the same output
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _vae():
    vae = models.create_vae(factor=2, latent_channels=4, channels=(16, 16), norm_groups=8, mid_attention=False)
    vae.fit_scaling(torch.rand(4, 3, 8, 8) * 2 - 1)  # a scale and shift in gen's config only, not the wrapped model's
    return vae.eval()


def _fp32(pipe):
    pipe.precision = "fp32"  # not bf16 autocast, which "auto" picks on CPUs that have it: compared at fp32
    return pipe


@pytest.fixture(scope="module")
def pixel_pipe():
    torch.manual_seed(0)
    enc = _text()
    net = _jitter(models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim))
    return _fp32(Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=10)))


@pytest.fixture(scope="module")
def latent_pipe():
    torch.manual_seed(1)
    enc = _text()
    net = _jitter(models.create("dit-tiny", sample_size=4, in_channels=4, text_dim=enc.dim, pooled_dim=enc.pooled_dim))
    return _fp32(Pipeline(net, enc, NoiseSchedule.create("linear", prediction="eps"),
                          SamplingDefaults(size=8, steps=8, clip_x0=None), vae=_vae()))


def _unconditional(sampler="ddim", spacing="trailing", steps=10, clip=1.0, **schedule):
    torch.manual_seed(2)
    net = _jitter(models.create("dit-tiny", sample_size=8, text_dim=None, pooled_dim=None))
    return _fp32(Pipeline(net, None, NoiseSchedule.create(**schedule),
                          SamplingDefaults(sampler=sampler, spacing=spacing, steps=steps, size=8, clip_x0=clip)))


def _noise(seed, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))[None]


def _diffusers_text(folder, prompts):
    """cond from the exported tokenizer and text encoder, as a diffusers pipeline computes it,
    with the text mask gen's denoiser reads (the tokenizer's attention mask: words, SOT, EOT)."""
    tok = transformers.CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    enc = transformers.CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder").eval()
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = enc(ids.input_ids)
    return {"text": out.last_hidden_state, "pooled": out.text_embeds, "text_mask": ids.attention_mask.bool()}


def _diffusers_loop(folder, net, cond, x, cfg):
    """Sample with the exported scheduler and gen's denoiser: v / eps guidance on the
    learned null (cond["null"]), clipped x_0 with its recomputed noise (DDIM's option)."""
    sched = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    sched.set_timesteps(json.loads((folder / "model_index.json").read_text())["_gen"]["defaults"]["steps"])
    batch = x.shape[0]
    for t in sched.timesteps:
        tt = t.expand(batch)
        with torch.no_grad():
            pred = net(x, tt, {**cond, "null": torch.zeros(batch, dtype=torch.bool)})
            if cfg != 1:
                null = net(x, tt, {**cond, "null": torch.ones(batch, dtype=torch.bool)})
                pred = null + cfg * (pred - null)
        x = sched.step(pred, t, x, use_clipped_model_output=True).prev_sample
    return x


def test_the_text_encoder_and_tokenizer_load_in_transformers_and_match_gens(tmp_path):
    for hash_vocab in (512, None):  # a folded vocabulary (the toy models') is unfolded
        torch.manual_seed(3)
        enc = _text(hash_vocab)
        pipe = Pipeline(models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim), enc,
                        NoiseSchedule.create("cosine", prediction="v"))
        out = tmp_path / f"vocab-{hash_vocab}"
        report = export_diffusers(pipe, out)
        assert {"text_encoder", "tokenizer"} <= set(report["diffusers"])
        tok = transformers.CLIPTokenizer.from_pretrained(out, subfolder="tokenizer")
        ids = tok(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
        bpe = enc.tokenizer(PROMPTS)  # gen's BPE ids (before folding): equal up to and including EOT
        words = torch.arange(16) <= (bpe == enc.tokenizer.eot_token_id).int().argmax(-1, keepdim=True)
        assert torch.equal(ids[words], bpe[words])
        ours = enc(enc.tokenize(PROMPTS))
        theirs = _diffusers_text(out, PROMPTS)
        torch.testing.assert_close(theirs["text"], ours["text"], atol=1e-5, rtol=1e-5)  # every position, padding too
        torch.testing.assert_close(theirs["pooled"], ours["pooled"], atol=1e-5, rtol=1e-5)
        assert torch.equal(theirs["text_mask"], ours["text_mask"])
        plain = transformers.CLIPTextModel.from_pretrained(out, subfolder="text_encoder")  # SD's class: no projection
        with torch.no_grad():
            torch.testing.assert_close(plain(ids).last_hidden_state, ours["text"], atol=1e-5, rtol=1e-5)


def test_the_vae_loads_in_diffusers_with_gens_latent_scaling(tmp_path, latent_pipe):
    report = export_diffusers(latent_pipe, tmp_path / "out")
    assert "vae" in report["diffusers"]
    vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "out" / "vae").eval()
    ours = latent_pipe.vae.config
    assert ours.scaling_factor != 1.0 and ours.shift_factor != 0.0
    assert (vae.config.scaling_factor, vae.config.shift_factor) == pytest.approx((ours.scaling_factor,
                                                                                  ours.shift_factor))
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():  # diffusers' convention (SD3 / Flux pipelines): z / scaling_factor + shift_factor
        decoded = vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor).sample
        encoded = (vae.encode(x).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor
        torch.testing.assert_close(decoded, latent_pipe.vae.decode(z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(encoded, latent_pipe.vae.encode(x), atol=1e-5, rtol=1e-5)


def test_sampling_with_the_exported_parts_gives_gens_images(tmp_path, pixel_pipe, latent_pipe):
    """diffusers' DDIMScheduler + transformers' text encoder + diffusers' VAE from the export,
    around gen's denoiser (the custom part), against gen's own ddim; with guidance."""
    for name, pipe, cfg in (("pixel", pixel_pipe, 3.0), ("latent", latent_pipe, 1.0)):
        out = tmp_path / name
        export_diffusers(pipe, out)
        net = models.load_pretrained(out / "transformer").eval()
        prompts = PROMPTS[:2]
        x_T = torch.cat([_noise(s, pipe.latent_shape(8)) for s in (5, 6)])
        x0 = _diffusers_loop(out, net, _diffusers_text(out, prompts), x_T, cfg)
        if pipe.vae is not None:
            vae = diffusers.AutoencoderKL.from_pretrained(out, subfolder="vae").eval()
            with torch.no_grad():
                x0 = vae.decode(x0 / vae.config.scaling_factor + vae.config.shift_factor).sample
        ours = pipe.generate(prompts, [5, 6], cfg=cfg)
        torch.testing.assert_close(x0.clamp(-1, 1), ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler,cls", [("ddim", "DDIMScheduler"), ("ddpm", "DDPMScheduler"),
                                         ("dpm++2m", "DPMSolverMultistepScheduler"),
                                         ("heun", "HeunDiscreteScheduler")])
@pytest.mark.parametrize("schedule", [dict(beta_schedule="cosine", prediction="v"),
                                      dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
                                      dict(beta_schedule="linear", prediction="x0", zero_terminal_snr=True)])
def test_the_scheduler_config_holds_gens_schedule(tmp_path, sampler, cls, schedule):
    pipe = _unconditional(sampler, "leading" if sampler == "ddpm" else "trailing", **schedule)
    report = export_diffusers(pipe, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "scheduler" / "scheduler_config.json").read_text())
    if sampler == "heun" and schedule.get("zero_terminal_snr"):  # Heun has no rescale_betas_zero_snr
        assert config["_class_name"] == "DDIMScheduler" and "HeunDiscreteScheduler" in report["notes"][0]
        cls = "DDIMScheduler"
    assert report["parts"]["scheduler"]["class"] == config["_class_name"] == cls
    scheduler = getattr(diffusers, cls).from_pretrained(tmp_path / "out", subfolder="scheduler")
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), pipe.schedule.alphas_cumprod, atol=2e-6, rtol=0)
    assert NoiseSchedule.from_diffusers_config(config) == pipe.schedule  # gen reads the same schedule back
    scheduler.set_timesteps(pipe.defaults.steps)
    visited = list(dict.fromkeys(int(round(float(t))) for t in scheduler.timesteps))
    assert visited == make_timesteps(1000, pipe.defaults.steps, pipe.defaults.spacing, pipe.schedule)


def test_dpm_solver_from_the_export_samples_what_gens_dpm_solver_samples(tmp_path):
    pipe = _unconditional("dpm++2m", steps=12, clip=None, beta_schedule="cosine", prediction="v")
    export_diffusers(pipe, tmp_path / "out")
    scheduler = diffusers.DPMSolverMultistepScheduler.from_pretrained(tmp_path / "out", subfolder="scheduler")
    scheduler.set_timesteps(pipe.defaults.steps)
    x = x_T = _noise(4, (3, 8, 8))
    for t in scheduler.timesteps:
        with torch.no_grad():
            x = scheduler.step(pipe.denoiser(x, t.expand(1), {"null": torch.zeros(1, dtype=torch.bool)}), t,
                               x).prev_sample
    torch.testing.assert_close(x, pipe.denoise([""], x_T), atol=1e-4, rtol=0)


def test_the_notes_say_where_diffusers_steps_differently(tmp_path):
    notes = export_diffusers(_unconditional("dpm++2m", beta_schedule="cosine", prediction="v"),
                             tmp_path / "dpm")["notes"]
    assert any("does not clip" in n for n in notes)  # DPMSolverMultistepScheduler has no static clip
    notes = export_diffusers(_unconditional(steps=6, clip=None, beta_schedule="cosine", prediction="v"),
                             tmp_path / "ddim")["notes"]
    assert any("t - 1000 // steps" in n or "visits timesteps" in n for n in notes)  # 1000 / 6 is no stride
    notes = export_diffusers(_unconditional("heun", beta_schedule="cosine", prediction="v"), tmp_path / "heun")["notes"]
    assert any("Karras" in n for n in notes)


def test_custom_components_name_gens_class_as_diffusers_save_pretrained_does(tmp_path, pixel_pipe):
    report = export_diffusers(pixel_pipe, tmp_path / "out")
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["_class_name"] == "DiffusionPipeline" and index["_diffusers_version"] == diffusers.__version__
    assert index["transformer"] == ["models.dit", "DiT"] and report["custom"] == ["transformer"]
    assert set(index["_gen"]["custom"]) == {"transformer"}
    library, cls = index["transformer"]
    assert getattr(importlib.import_module(library), cls) is type(pixel_pipe.denoiser)
    net = models.load_pretrained(tmp_path / "out" / "transformer")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), pixel_pipe.denoiser.state_dict().values()))
    assert NoiseSchedule.from_dict(index["_gen"]["schedule"]) == pixel_pipe.schedule
    assert index["_gen"]["defaults"] == dataclasses.asdict(pixel_pipe.defaults)
    for name, part in report["parts"].items():
        assert index[name] == [part["library"], part["class"]] and part["as_is"] == (name != "transformer")


def test_a_video_pipeline_exports_its_wan_vae_with_gens_scaling(tmp_path):
    torch.manual_seed(4)
    vae = models.create_video_vae(spatial_factor=2, temporal_factor=2, channels=(8, 8), latent_channels=4).eval()
    vae.config = dataclasses.replace(vae.config, scaling_factor=1.7, shift_factor=0.2)
    net = models.create("video-dit-tiny", in_channels=4, sample_size=4, frames=2, tubelet=1, text_dim=None,
                        pooled_dim=None)
    pipe = VideoPipeline(net, None, NoiseSchedule.create("cosine", prediction="v"),
                         SamplingDefaults(size=8, steps=4, frames=3, fps=2.0), vae=vae)
    report = export_diffusers(pipe, tmp_path / "out")
    assert report["class"] == "VideoPipeline" and report["custom"] == ["transformer"]
    assert report["parts"]["vae"]["class"] == "AutoencoderKLWan"
    wan = diffusers.AutoencoderKLWan.from_pretrained(tmp_path / "out", subfolder="vae").eval()
    mean = torch.tensor(wan.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(wan.config.latents_std).view(1, -1, 1, 1, 1)
    z = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, 5, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1  # 1 + 4k frames (note)
    with torch.no_grad():  # Wan's pipelines: latents * latents_std + latents_mean is decoded, and the inverse encoded
        torch.testing.assert_close(wan.decode(z * std + mean).sample, vae.decode(z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close((wan.encode(x).latent_dist.mean - mean) / std, vae.encode(x), atol=1e-5, rtol=1e-5)
    assert any("groups of 4 frames" in n for n in report["notes"])  # temporal factor 2: other lengths differ


def test_a_cascade_is_exported_stage_by_stage(tmp_path, pixel_pipe):
    torch.manual_seed(5)
    stage = SuperResolution(_jitter(models.create("sr-unet-tiny", sample_size=8)), None,
                            NoiseSchedule.create("cosine", prediction="v"),
                            SamplingDefaults(size=16, steps=2, cfg=1.0, scale=2, sr_noise=0.2))
    report = export_diffusers(Cascade(pixel_pipe, [stage]), tmp_path / "out")
    assert report["class"] == "Cascade" and list(report["stages"]) == ["base", "sr-1"]
    assert report["custom"] == ["base/transformer", "sr-1/unet"]
    assert {"base/text_encoder", "base/scheduler", "sr-1/scheduler", "sr-1/low_res_scheduler"} <= set(
        report["diffusers"])
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["_gen"]["class"] == "Cascade" and index["_gen"]["stages"] == ["base", "sr-1"]
    assert json.loads((tmp_path / "out" / "sr-1" / "model_index.json").read_text())["unet"] == ["models.unet", "UNet"]
    # the stage's noise augmentation is diffusers' DDPMScheduler.add_noise at the same timestep
    ddpm = diffusers.DDPMScheduler.from_pretrained(tmp_path / "out" / "sr-1", subfolder="low_res_scheduler")
    low, eps, t = torch.rand(2, 3, 8, 8) * 2 - 1, torch.randn(2, 3, 8, 8), torch.tensor([200, 600])
    torch.testing.assert_close(ddpm.add_noise(low, eps, t), augment(low, t, eps, stage.schedule), atol=1e-5, rtol=0)


def test_gen_export_writes_the_shipped_pipeline(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["export", "toy-image-dit-ft", "--diffusers", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(out) and any(line.startswith("  transformer: gen custom (models.dit.DiT)") for line in lines)
    shipped = load("toy-image-dit-ft")
    scheduler = diffusers.DDIMScheduler.from_pretrained(out, subfolder="scheduler")
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.timestep_spacing == "trailing"
    ours = shipped.encode_prompt(PROMPTS[:2])
    theirs = _diffusers_text(out, PROMPTS[:2])
    torch.testing.assert_close(theirs["text"], ours["text"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(theirs["pooled"], ours["pooled"], atol=1e-5, rtol=1e-5)
    net = models.load_pretrained(out / "transformer")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), shipped.denoiser.state_dict().values()))
    with pytest.raises(GenError, match="is a diffusers export of a gen Pipeline"):  # not mistaken for an SD folder
        load(str(out))


def test_bad_exports_are_one_line_and_leave_nothing_behind(tmp_path, capsys, pixel_pipe):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [(["export", "toy-image-dit-ft", "--diffusers", "--out", str(taken)], "exists and is not empty"),
             (["export", "no-such-model", "--diffusers", "--out", str(tmp_path / "a")], "unknown model 'no-such"),
             (["export", "toy-image-dit-ft", "--out", str(tmp_path / "b")], "pass --diffusers"),
             (["export", "toy-image-dit-ft", "--diffusers", "--out", str(tmp_path / "c"), "--scheduler", "NoScheduler"],
              "NoScheduler"),
             (["export", "toy-image-dit-ft", "--diffusers"], "--out")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gen: error: ") and message in err[0], (argv, err)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"] and (taken / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no partial folders
    with pytest.raises(GenError, match="exists and is not empty"):
        export_diffusers(pixel_pipe, taken)
