"""Export a gen pipeline in diffusers' folder layout: every part diffusers (or transformers)
has a class for in its own format, the rest as gen custom components.

    from gen.pipeline import load
    from gen.pipeline.export import export_diffusers
    report = export_diffusers(load("toy-image-dit-ft"), "exported")
    report["diffusers"]     # ["text_encoder", "tokenizer", "scheduler"]: load as they are
    report["custom"]        # ["transformer"]: gen's DiT, read with models.load_pretrained

    DIR/model_index.json        _class_name, _diffusers_version, one [library, class] per part
                                (diffusers' convention), and "_gen": what gen needs to sample
                                (pipeline class, noise schedule, sampling defaults)
    DIR/vae/                    AutoencoderKL (ImageVAE) or AutoencoderKLWan (VideoVAE), written
                                by diffusers' save_pretrained, gen's latent scaling in its config
    DIR/scheduler/              scheduler_config.json: the pipeline's default sampler as a
                                diffusers scheduler (SAMPLER_SCHEDULERS), gen's schedule in it
    DIR/low_res_scheduler/      super-resolution stages: DDPMScheduler, whose add_noise is the
                                input's noise augmentation (as in diffusers' SD x4 upscaler)
    DIR/text_encoder/, tokenizer/   transformers CLIPTextModelWithProjection + CLIPTokenizer
                                (clip_export.py): the same token states and pooled embedding
    DIR/transformer/ or unet/   gen's DiT or U-Net as gen writes it (config.json with _class,
                                model.safetensors), listed as ["models.dit", "DiT"]

Latent scaling. gen's VAEs hand the denoiser z' = (z - shift) * scale and decode z' / scale +
shift. AutoencoderKL's config says the same with `scaling_factor` and `shift_factor` (SD3's
and Flux's convention; SD's pipelines, which read scaling_factor only, are right whenever
shift is 0); AutoencoderKLWan's with per-channel `latents_mean` = shift and `latents_std` =
1 / scale (Wan's pipelines: z' = (z - latents_mean) / latents_std).

Custom components use the encoding diffusers' own DiffusionPipeline.save_pretrained writes
for a class outside diffusers and transformers: [its full module path, its class name].
diffusers resolves such an entry only if that module is already imported, and has no way
to load a plain nn.Module from it. No diffusers pipeline class runs gen's denoisers (their
conditioning: gen's text mask, learned null embedding, ...), so `_class_name` is the generic
"DiffusionPipeline" and `DiffusionPipeline.from_pretrained(DIR)` builds nothing; the parts
are loaded one by one (each part's `load` in the report).

A cascade is exported stage by stage: DIR/base, DIR/sr-1, ..., each such a folder, and a
DIR/model_index.json whose "_gen" lists them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from gen.errors import GenError
from gen.pipeline.folder import INDEX, write_folder

# gen's sampler -> the diffusers scheduler written by default; "regression" stages sample
# in one pass (no scheduler). diffusers has no scheduler taking gen's heun steps (DPM-Solver++
# form): HeunDiscreteScheduler (Karras et al.'s Heun in sigma) is the nearest.
SAMPLER_SCHEDULERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "dpm++2m": "DPMSolverMultistepScheduler",
                      "heun": "HeunDiscreteScheduler"}
COMPONENT_NAMES = {"DiT": "transformer", "UNet": "unet"}  # diffusers' names for a DiT and a U-Net


def export_diffusers(pipe, out_dir, scheduler: str | None = None) -> dict:
    """Write `pipe` (Pipeline, VideoPipeline, SuperResolution or Cascade) into the new folder
    `out_dir` in diffusers' layout (module doc) and return the report: {"path", "class",
    "parts": {name: {"library", "class", "as_is", "load", "why"}}, "diffusers": parts that
    diffusers / transformers load as they are, "custom": gen custom components, "notes":
    where diffusers' sampling differs from gen's}; a cascade's has "stages" instead of
    "parts", and its part names are "base/vae", .... `scheduler` names the diffusers class
    for scheduler/ (a cascade's base's; default: the pipeline's sampler's, SAMPLER_SCHEDULERS).

    An existing non-empty `out_dir` is refused; the folder is assembled beside it and
    renamed into place, so a failure leaves nothing behind."""
    from gen.pipeline.cascade import Cascade
    from gen.pipeline.diffusers import DiffusersPipeline

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenError(f"{out} exists and is not empty; choose a new folder (an export never replaces one)")
    if isinstance(pipe, DiffusersPipeline):
        raise GenError(f"{pipe.name or 'this pipeline'} is already a diffusers folder; copy it instead of exporting")
    if scheduler is not None:  # checked before anything is written
        from samplers import SamplerError
        from samplers.diffusers_adapter import scheduler_class

        try:
            scheduler_class(scheduler)
        except SamplerError as err:
            raise GenError(f"--scheduler {scheduler}: {err}") from None
    report: dict = {}

    def fill(tmp: Path) -> None:
        if isinstance(pipe, Cascade):
            report.update(_export_cascade(pipe, tmp, out, scheduler))
        else:
            report.update(_export_pipeline(pipe, tmp, out, scheduler))

    write_folder(out, False, fill)
    return report


def _export_cascade(cascade, tmp: Path, out: Path, scheduler: str | None) -> dict:
    import diffusers

    from gen import __version__

    names = ["base"] + [f"sr-{k + 1}" for k in range(len(cascade.stages))]
    stages = {name: _export_pipeline(stage, tmp / name, out / name, scheduler if name == "base" else None)
              for name, stage in zip(names, [cascade.base, *cascade.stages])}
    index = {"_class_name": "DiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "_gen": {"version": __version__, "class": "Cascade", "stages": names,
                      "base_defaults": cascade.base_defaults}}
    (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    joined = {key: [f"{name}/{part}" for name, r in stages.items() for part in r[key]]
              for key in ("diffusers", "custom")}
    notes = [f"{name}: {note}" for name, r in stages.items() for note in r["notes"]]
    return {"path": str(out), "class": "Cascade", "stages": stages, **joined, "notes": notes}


def _export_pipeline(pipe, tmp: Path, out: Path, scheduler: str | None) -> dict:
    """One pipeline's folder into `tmp` (its final place: `out`)."""
    import diffusers

    from gen import __version__
    from gen.pipeline.superres import SuperResolution

    tmp.mkdir(parents=True, exist_ok=True)
    parts, notes = {}, []
    name = COMPONENT_NAMES.get(type(pipe.denoiser).__name__, "denoiser")
    parts[name] = _export_denoiser(pipe.denoiser, tmp / name, out / name)
    if pipe.text_encoder is not None:
        parts.update(_export_text_encoder(pipe.text_encoder, tmp, out))
    if pipe.vae is not None:
        parts["vae"], more = _export_vae(pipe.vae, tmp / "vae", out)
        notes += more
    sampler = pipe.defaults.sampler
    if sampler != "regression" or scheduler is not None:
        parts["scheduler"], more = _export_scheduler(pipe, tmp, out, scheduler, pipe.defaults.spacing,
                                                     pipe.defaults.clip_x0)
        notes += more
    else:
        notes.append("no scheduler/: a regression stage draws its image in one forward pass")
    if isinstance(pipe, SuperResolution):  # the input's noise augmentation: DDPMScheduler.add_noise
        parts["low_res_scheduler"], _ = _export_scheduler(pipe, tmp, out, "DDPMScheduler", None, None,
                                                          part="low_res_scheduler")
    if pipe.text_encoder is not None and pipe.null_conditioning == "learned":
        notes.append("classifier-free guidance: the unconditional half is the denoiser's learned null embedding "
                     "(cond['null'] true), not an empty prompt's text states")
    index = {"_class_name": "DiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "_gen": {"version": __version__, "class": type(pipe).__name__, "kind": pipe.kind,
                      "schedule": pipe.schedule.to_dict(), "defaults": asdict(pipe.defaults),
                      "null_conditioning": pipe.null_conditioning,
                      "custom": {k: p["why"] for k, p in parts.items() if not p["as_is"]}}}
    index.update({k: [p["library"], p["class"]] for k, p in sorted(parts.items())})
    (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return {"path": str(out), "class": type(pipe).__name__, "parts": parts,
            "diffusers": [k for k, p in parts.items() if p["as_is"]],
            "custom": [k for k, p in parts.items() if not p["as_is"]], "notes": notes}


def _part(library: str, cls: str, load: str, why: str | None = None) -> dict:
    return {"library": library, "class": cls, "as_is": why is None, "load": load, "why": why}


def _export_denoiser(net, tmp: Path, out: Path) -> dict:
    from models.base import ConfiguredModule

    if not isinstance(net, ConfiguredModule):
        raise GenError(f"the denoiser is a {type(net).__name__}, not a gen model (models/); gen exports its own "
                       f"denoisers (DiT, UNet) only")
    net.save_pretrained(tmp)
    cls = type(net).__name__
    keys = ", ".join(getattr(net, "cond_keys", ())) or "none"
    return _part(type(net).__module__, cls, f"models.load_pretrained({str(out)!r})",
                 why=f"diffusers has no class for gen's {cls} (gen's own blocks, called as net(x_t, t, cond) with cond "
                     f"keys: {keys}); saved as gen writes it")


def _export_text_encoder(enc, tmp: Path, out: Path) -> dict:
    """text_encoder/ + tokenizer/ in transformers' format, or text_encoder/ as a gen custom
    component where transformers is missing or the encoder is not gen's CLIP tower."""
    from models.base import ConfiguredModule
    from models.text import TextEncoder

    why = None
    if not isinstance(enc, TextEncoder):
        why = f"{type(enc).__name__} is not gen's CLIP text encoder (models/text.py); no transformers class maps it"
    else:
        try:
            import transformers  # noqa: F401
        except ImportError:
            why = "transformers is not installed (pip install transformers to export it as CLIPTextModelWithProjection)"
    if why is None:
        from gen.pipeline.clip_export import save_text_encoder

        save_text_encoder(enc, tmp / "text_encoder", tmp / "tokenizer")
        return {name: _part("transformers", cls,
                            f"transformers.{cls}.from_pretrained({str(out)!r}, subfolder={name!r})")
                for name, cls in (("text_encoder", "CLIPTextModelWithProjection"), ("tokenizer", "CLIPTokenizer"))}
    if not isinstance(enc, ConfiguredModule):
        raise GenError(f"the text encoder is a {type(enc).__name__}, which gen cannot save; {why}")
    enc.save_pretrained(tmp / "text_encoder")
    load = f"models.load_pretrained({str(out / 'text_encoder')!r})"
    return {"text_encoder": _part(type(enc).__module__, type(enc).__name__, load, why=why)}


def _export_vae(vae, tmp: Path, out: Path) -> tuple[dict, list[str]]:
    """diffusers' own save_pretrained of the wrapped autoencoder, gen's latent scaling in its
    config; and a note where diffusers' encode reads clips differently."""
    from models.vae import ImageVAE
    from models.video_vae import VideoVAE

    c, notes = getattr(vae, "config", None), []
    if isinstance(vae, ImageVAE):
        scaling = {"scaling_factor": float(c.scaling_factor), "shift_factor": float(c.shift_factor)}
    elif isinstance(vae, VideoVAE):
        channels = c.latent_channels
        scaling = {"latents_mean": [float(c.shift_factor)] * channels,
                   "latents_std": [1.0 / float(c.scaling_factor)] * channels}
        if c.temporal_factor != 4:
            notes.append(f"AutoencoderKLWan.encode reads a clip as frame 0, then groups of 4 frames (Wan's temporal "
                         f"factor); with this VAE's {c.temporal_factor} it encodes clips of 1 + 4k frames as gen "
                         f"does and drops the frames past the last group of 4 in other lengths (decode is the same)")
    else:
        raise GenError(f"the VAE is a {type(vae).__name__}; gen exports its ImageVAE and VideoVAE")
    vae.model.save_pretrained(tmp)
    # gen keeps the scaling in its own config (fit_scaling sets it there), so the wrapped model's may be stale
    config = json.loads((tmp / "config.json").read_text())
    config.update(scaling)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    cls = type(vae.model).__name__
    return _part("diffusers", cls, f"diffusers.{cls}.from_pretrained({str(out)!r}, subfolder='vae')"), notes


def _export_scheduler(pipe, tmp: Path, out: Path, name: str | None, spacing: str | None, clip,
                      part: str = "scheduler") -> tuple[dict, list[str]]:
    """tmp/part: the schedule (with `spacing` and x_0 clipping `clip`) as diffusers scheduler
    `name` (default: the sampler's), built by the sampler adapter's one translation
    (samplers/diffusers_adapter.py), and the notes on where its sampling differs from gen's."""
    from samplers import SamplerError
    from samplers.diffusers_adapter import build_scheduler

    d = pipe.defaults
    chosen = name or (d.sampler.removeprefix("diffusers:") if d.sampler.startswith("diffusers:")
                      else SAMPLER_SCHEDULERS.get(d.sampler, "DDIMScheduler"))
    notes = []
    try:
        scheduler, leftover = build_scheduler(chosen, pipe.schedule, spacing, clip)
    except SamplerError as err:
        if name is not None:
            raise GenError(f"--scheduler {name}: {err}; choose another diffusers scheduler, e.g. DDIMScheduler") \
                from None
        notes.append(f"the default sampler {d.sampler!r} would be {chosen}, which cannot hold this schedule ({err}); "
                     f"wrote DDIMScheduler")
        chosen = "DDIMScheduler"
        try:
            scheduler, leftover = build_scheduler(chosen, pipe.schedule, spacing, clip)
        except SamplerError as err:
            raise GenError(f"the schedule has no diffusers scheduler: {err}; pass --scheduler NAME") from None
    scheduler.save_pretrained(tmp / part)
    if part == "scheduler":
        notes += _sampling_notes(pipe, scheduler, leftover)
    return _part("diffusers", chosen, f"diffusers.{chosen}.from_pretrained({str(out)!r}, subfolder={part!r})"), notes


def _sampling_notes(pipe, scheduler, leftover) -> list[str]:
    """Where diffusers' scheduler, run as its pipelines run it, steps differently from gen's sampler."""
    from samplers import SamplerError, make_timesteps

    d, name, config = pipe.defaults, type(scheduler).__name__, scheduler.config
    T = pipe.schedule.num_train_timesteps
    notes = []
    if d.sampler == "heun" and name == "HeunDiscreteScheduler":
        notes.append("gen's heun is a DPM-Solver++-form Heun step; diffusers' HeunDiscreteScheduler is Karras et "
                     "al.'s Heun in sigma: same schedule, different samples")
    fresh = type(scheduler).from_config(config)
    fresh.set_timesteps(d.steps)
    theirs = list(dict.fromkeys(int(round(float(t))) for t in fresh.timesteps))  # Heun repeats each timestep
    try:
        ours = make_timesteps(T, d.steps, d.spacing, pipe.schedule)
    except SamplerError:  # a spacing gen does not make itself
        ours = theirs
    if theirs != ours:
        notes.append(f"at the default {d.steps} steps ({d.spacing!r}) {name} visits timesteps {theirs[:4]}... where "
                     f"gen visits {ours[:4]}...; pass gen's to set_timesteps(timesteps=...) where {name} takes them")
    elif name in ("DDIMScheduler", "DDPMScheduler") and any(a - b != T // d.steps for a, b in zip(ours, ours[1:])):
        notes.append(f"{name}.step takes each step's previous timestep as t - {T} // steps, which this grid "
                     f"({d.spacing!r}, {d.steps} steps) is not; gen steps to the next timestep of the grid")
    if leftover is not None:
        notes.append(f"gen clips each step's x_0 ({leftover!r}); {name} has no option for it, so it does not clip")
    elif name == "DDIMScheduler" and config.clip_sample:
        notes.append("gen recomputes the noise from the clipped x_0 at each step; pass use_clipped_model_output=True "
                     "to DDIMScheduler.step for the same result (diffusers' pipelines do not)")
    return notes


def format_report(report: dict) -> list[str]:
    """The report as lines for the command line: the folder, one line per part, the notes."""
    lines = [report["path"]]
    stages = report.get("stages") or {"": report}
    for stage, r in stages.items():
        for name, p in r["parts"].items():
            where = f"{p['library']}.{p['class']}" if p["as_is"] else f"gen custom ({p['library']}.{p['class']})"
            lines.append(f"  {stage + '/' if stage else ''}{name}: {where}; load: {p['load']}")
    lines += [f"  note: {n}" for n in report["notes"]]
    return lines


__all__ = ["COMPONENT_NAMES", "SAMPLER_SCHEDULERS", "export_diffusers", "format_report"]
