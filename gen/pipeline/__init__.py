"""Pipelines: what `gen image`, `gen video` and `gen upscale` run, one folder each.

    from gen.pipeline import load
    pipe = load("default")                 # the shipped text-to-image default
    pipe = load("runs/mine/pipeline")      # whatever class the folder names
    images = pipe("a cat in a hat", seed=0)

    weights.py    the models shipped in gen/weights, and how names resolve to folders
    folder.py     the folder format: model_index.json (a format version, the parts, the
                  schedule, the sampling defaults), and parts stored as their difference
                  from a shipped base (which records the base's sha256)
    image.py      Pipeline: text encoder + denoiser + schedule (+ VAE)
    video.py      VideoPipeline
    superres.py   SuperResolution: a cascade's super-resolution stage
    cascade.py    Cascade: a base pipeline, then super-resolution stages
    video_cascade.py  VideoCascade: text -> image -> video, then temporal and spatial super-resolution
    diffusers.py  DiffusersPipeline: diffusers Stable-Diffusion folders on gen's samplers

`load` reads a folder's model_index.json and builds the class its `_class` names (a
diffusers folder by its `_class_name`); `SomePipeline.from_pretrained(name)` is `load`
for that class's kind.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gen.errors import GenError
from gen.pipeline.cascade import Cascade
from gen.pipeline.folder import FORMAT, INDEX, read_index
from gen.pipeline.image import MAX_SCALE, NULL_CONDITIONINGS, SAMPLERS, Pipeline, SamplingDefaults, to_uint8
from gen.pipeline.superres import SuperResolution
from gen.pipeline.video import FRAME_MASKS, VideoPipeline, clips_to_uint8, frame_mask, random_frame_masks
from gen.pipeline.video_cascade import VideoCascade
from gen.pipeline.weights import (DEFAULT_VAE, DEFAULT_VIDEO_VAE, WEIGHTS_DIR, is_local_model, resolve_vae,
                                  shipped_models, unknown_model)

# model_index.json "_class" -> the class that reads the folder (its from_folder)
CLASSES = {c.__name__: c for c in (Pipeline, VideoPipeline, SuperResolution, Cascade, VideoCascade)}
NOUNS = {"image": "text-to-image model", "video": "text-to-video model", "sr": "super-resolution stage"}
KINDS = {"image": "a text-to-image model; use it with `gen image`",
         "video": "a text-to-video model; use it with `gen video`",
         "sr": "a super-resolution stage; use it with `gen upscale` or in a cascade (`gen cascade`)"}


def load(name_or_path: str = "default", kind: str | None = None, device="cpu", dtype: torch.dtype | None = None,
         local_files_only: bool = True):
    """The pipeline a shipped name, a folder or a diffusers hub id holds. `kind` ("image",
    "video", "sr"; None: any) is what the caller runs: another kind is refused by name
    ("default" means the shipped default of `kind`, image when None)."""
    from gen.pipeline import diffusers

    shipped = shipped_models(kind or "image")
    if name_or_path == "default" and "default" not in shipped:
        train = {"image": "gen train image", "video": "gen train video", "sr": "gen train sr"}.get(kind, "gen train")
        raise GenError(f"no {NOUNS.get(kind or 'image', 'model')} ships with this gen yet; train one ({train} --out "
                       f"RUN) and pass --model RUN/pipeline")
    path = shipped.get(name_or_path) or Path(name_or_path)
    name = str(name_or_path)
    if not (path / INDEX).is_file():
        hub = kind in (None, "image") and diffusers.is_hub_id(name)
        if hub and (not local_files_only or diffusers.is_cached(name)):
            return diffusers.DiffusersPipeline.from_pretrained(name, device, dtype, local_files_only)
        raise GenError(unknown_model(name, shipped, hub=hub))
    index = read_index(path)
    if diffusers.is_diffusers_index(index):
        if isinstance(index.get("_gen"), dict):  # written by `gen export --diffusers` (gen/pipeline/export.py)
            what = index["_gen"].get("class", "pipeline")
            raise GenError(f"{name} is a diffusers export of a gen {what} (gen export --diffusers): load its parts "
                           f"with diffusers and transformers; gen runs the pipeline it was exported from")
        if kind not in (None, "image"):
            raise GenError(f"{name} is {KINDS['image']}")
        return diffusers.DiffusersPipeline.from_pretrained(path, device, dtype)
    found = index.get("kind", "image")
    if kind is not None and found != kind:
        raise GenError(f"{name} is {KINDS.get(found, f'of kind {found!r}, which gen does not know')}")
    by_kind = {"image": Pipeline, "video": VideoPipeline, "sr": SuperResolution}  # folders that name no _class
    cls = CLASSES.get(index["_class"]) if "_class" in index else by_kind.get(found)
    if cls is None or cls.kind != found:
        raise GenError(f"{path / INDEX}: _class {index.get('_class')!r} is not a gen pipeline class "
                       f"({', '.join(CLASSES)}); the folder is damaged")
    return cls.from_folder(path, index, device=device, dtype=dtype, name=name)


def install(source, name: str, extras: tuple[str, ...] = ("README.md", "samples.png", "samples.gif"),
            defaults: dict | None = None, **save) -> Path:
    """Copy a trained pipeline folder into the package as the shipped default of its kind:
    weights in float16 (`save` goes to save_pretrained, e.g. base=...), its card and samples
    beside them, and the kind's DEFAULT file naming it. `defaults` replaces sampling
    defaults (e.g. the measured best sr_noise)."""
    import shutil
    from dataclasses import replace

    from gen.pipeline import weights

    source = Path(source)
    pipe = load(str(source))
    if defaults:
        pipe.defaults = replace(pipe.defaults, **defaults)
    target = weights.WEIGHTS_DIR / name
    pipe.save_pretrained(target, overwrite=True, **{"dtype": torch.float16, **save})
    for extra in extras:
        if (source / extra).is_file():
            shutil.copy(source / extra, target / extra)
    (weights.WEIGHTS_DIR / weights.DEFAULT_FILES[pipe.kind]).write_text(name + "\n")
    return target


def load_pipeline(name_or_path: str, device="cpu", dtype: torch.dtype | None = None):
    """The Pipeline or VideoPipeline a name or folder holds (whichever kind it is)."""
    return load(name_or_path, device=device, dtype=dtype)


__all__ = ["CLASSES", "DEFAULT_VAE", "DEFAULT_VIDEO_VAE", "FORMAT", "FRAME_MASKS", "INDEX", "MAX_SCALE",
           "NULL_CONDITIONINGS", "SAMPLERS", "WEIGHTS_DIR", "Cascade", "Pipeline", "SamplingDefaults",
           "SuperResolution", "VideoCascade", "VideoPipeline", "clips_to_uint8", "frame_mask", "install",
           "is_local_model", "load", "load_pipeline", "random_frame_masks", "read_index", "resolve_vae",
           "shipped_models", "to_uint8", "unknown_model"]
