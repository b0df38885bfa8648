"""The cascade (DESIGN.md): a base text-to-image pipeline, then super-resolution stages,
each with its own denoiser, schedule and sampling defaults, run in order.

    from gen.pipeline import Cascade
    pipe = Cascade(base, [sr_4x])                 # or Pipeline.from_pretrained(cascade_folder)
    images = pipe.generate(["a cat in a hat"], [0])           # the last stage's size
    small = pipe.generate(["a cat in a hat"], [0], size=32)   # stop after the base

A cascade folder holds `model_index.json` ({"_class": "Cascade", "format": 1, "stages":
[folder, ...]}, base first) and one pipeline folder per stage, written by their own
save_pretrained; a stage may instead be {"shipped": NAME}, a pipeline shipped with gen.
Image i of every stage draws its noise from seed i, so a seed fixes the whole cascade's
output.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from gen.errors import GenError
from gen.pipeline.folder import FORMAT, INDEX, write_folder
from gen.pipeline.image import Pipeline
from gen.pipeline.superres import SuperResolution


class Cascade:
    kind = "image"

    def __init__(self, base: Pipeline, stages: list[SuperResolution], name: str = ""):
        if isinstance(base, Cascade):
            raise GenError(f"{base.name or 'the base'} is already a cascade; give its base pipeline")
        if not isinstance(base, Pipeline) or isinstance(base, SuperResolution) or base.kind != "image":
            raise GenError(f"a cascade starts with a text-to-image pipeline, got {type(base).__name__}")
        channels = 3  # every stage's input and output: pixels
        for k, stage in enumerate(stages):
            if not isinstance(stage, SuperResolution):
                raise GenError(f"cascade stage {k + 1} is a {type(stage).__name__}, not a super-resolution stage")
            if stage.denoiser.config.in_channels != channels:
                raise GenError(f"cascade stage {k + 1} takes {stage.denoiser.config.in_channels}-channel images "
                               f"but the stage before it gives {channels}")
        self.base, self.stages, self.name = base, list(stages), name
        self.base_defaults: dict = {}  # the cascade's own sampling settings for its base (saved with it)

    def set_base_defaults(self, **changes) -> None:
        """Sample the base with these defaults in this cascade (e.g. sampler, steps), the
        base's own folder untouched; they are saved in the cascade's model_index.json."""
        from dataclasses import fields

        known = {f.name for f in fields(self.base.defaults)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise GenError(f"base_defaults: {unknown[0]!r} is not a sampling default; "
                           f"known: {', '.join(sorted(known))}")
        self.base.defaults = replace(self.base.defaults, **changes)
        self.base_defaults = {**self.base_defaults, **changes}

    @property
    def sizes(self) -> list[int]:
        """The image side after the base and after each stage."""
        sizes = [self.base.defaults.size]
        for stage in self.stages:
            sizes.append(sizes[-1] * stage.defaults.scale)
        return sizes

    @property
    def defaults(self):
        """The base's sampling defaults, at the cascade's output size."""
        return replace(self.base.defaults, size=self.sizes[-1])

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def precision(self) -> str:
        return self.base.precision

    @precision.setter
    def precision(self, value: str) -> None:
        """Every stage samples at `value` ("auto", "bf16" or "fp32")."""
        for stage in (self.base, *self.stages):
            stage.precision = value

    @property
    def compute_precision(self) -> str:
        return self.base.compute_precision

    def encode_prompt(self, prompts: list[str]) -> dict:
        """The base's text conditioning (the super-resolution stages take no text)."""
        return self.base.encode_prompt(prompts)

    def stages_for(self, size: int | None) -> int:
        """How many super-resolution stages run for an output of `size` pixels a side."""
        if size is None:
            return len(self.stages)
        if size not in self.sizes:
            raise GenError(f"--size {size}: this cascade draws {', '.join(map(str, self.sizes))} pixels (the base, "
                           f"then each super-resolution stage)")
        return self.sizes.index(size)

    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None, sampler: str | None = None,
                 cfg: float | None = None, negative: str | None = None, size: int | None = None,
                 sr_noise: float | None = None, sr_steps: int | None = None, callback=None,
                 init: torch.Tensor | None = None, strength: float | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1]: the base's `steps`/`sampler`/`cfg`, then each stage
        at its own defaults (`sr_noise` and `sr_steps` override every stage's).

        `init`, `strength` and `mask` (at the output size; see Pipeline.generate) edit an
        image: the base redraws a copy box-downsampled to its size, the stages enlarge it, and
        the result keeps `init` exactly where `mask` is 0 (and everywhere at strength 0)."""
        from gen.pipeline.image import check_edit
        from gen.pipeline.superres import box_downsample

        count = self.stages_for(size)
        out_size = self.sizes[count]
        edit = check_edit(init, strength, mask, len(prompts), 3, out_size)
        if edit is not None:
            init, strength, mask = edit
            init, mask = init.to(self.device), None if mask is None else mask.to(self.device)
            if strength == 0:
                return init.expand(len(prompts), *init.shape[1:])
            factor = out_size // self.sizes[0]
            base_edit = {"init": box_downsample(init, factor), "strength": strength,
                         "mask": None if mask is None else box_downsample(mask, factor).ceil()}
        else:
            base_edit = {}
        x = self.base.generate(prompts, seeds, steps=steps, sampler=sampler, cfg=cfg, negative=negative,
                               callback=callback, **base_edit)
        for stage in self.stages[:count]:
            x = stage.upscale(x, seeds, steps=sr_steps, sr_noise=sr_noise)
        return x if edit is None or mask is None else torch.lerp(init, x, mask)

    def __call__(self, prompt: str | list[str], n: int = 1, seed: int = 0, **kwargs) -> list:
        """PIL images for `prompt` (n of each); image k of a prompt uses seed + k."""
        from PIL import Image

        from gen.pipeline import to_uint8

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(n)]
        seeds = [seed + k for _ in range(len(prompts) // n) for k in range(n)]
        return [Image.fromarray(a) for a in to_uint8(self.generate(prompts, seeds, **kwargs))]

    def stage_parameters(self, sr_noise: float | None = None, sr_steps: int | None = None) -> list[dict]:
        """What each super-resolution stage runs with (for the PNG's parameters)."""
        return [{"scale": s.defaults.scale, "steps": sr_steps or s.defaults.steps, "sampler": s.defaults.sampler,
                 "sr_noise": s.defaults.sr_noise if sr_noise is None else sr_noise} for s in self.stages]

    # --- files ------------------------------------------------------------------------

    def save_pretrained(self, path, overwrite: bool = False, dtype: torch.dtype | None = None,
                        shipped: bool = False) -> Path:
        """Write the folder (base, then sr-1, sr-2, ...), assembled beside and swapped in whole.
        `shipped`: a stage loaded by a shipped name is stored as that name ({"shipped": name}),
        not copied (how the shipped cascade names its shipped stages)."""
        from gen.pipeline.weights import shipped_models

        names = set(shipped_models()) - {"default"} if shipped else set()

        def fill(tmp: Path) -> None:
            entries = []
            for folder, stage in zip(["base"] + [f"sr-{k + 1}" for k in range(len(self.stages))],
                                     [self.base, *self.stages]):
                if stage.name in names:
                    entries.append({"shipped": stage.name})
                else:
                    stage.save_pretrained(tmp / folder, dtype=dtype)
                    entries.append(folder)
            index = {"_class": "Cascade", "kind": "image", "format": FORMAT, "stages": entries}
            if self.base_defaults:
                index["base_defaults"] = self.base_defaults
            (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")

        return write_folder(path, overwrite, fill)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device="cpu", dtype: torch.dtype | None = None) -> "Cascade":
        from gen.pipeline import load

        cascade = load(name_or_path, device=device, dtype=dtype)
        if not isinstance(cascade, Cascade):
            raise GenError(f"{name_or_path} is a single pipeline, not a cascade")
        return cascade

    @classmethod
    def from_folder(cls, path: Path, index: dict, device="cpu", dtype: torch.dtype | None = None,
                    name: str = "") -> "Cascade":
        """Each stage is a subfolder of the cascade, or {"shipped": NAME}: a pipeline shipped
        with gen (the shipped cascade does not copy its stages' weights)."""
        from gen.pipeline.folder import stage_source

        stages = index.get("stages")

        def where(entry):
            return stage_source(path, entry, "'stages' must list the stage subfolders (or {\"shipped\": NAME}), "
                                             "base first")

        if not isinstance(stages, list) or not stages:
            raise GenError(f"{path / INDEX}: 'stages' must list the stage subfolders, base first; got {stages!r}")
        base = Pipeline.from_pretrained(where(stages[0]), device=device, dtype=dtype)
        rest = [SuperResolution.from_pretrained(where(s), device=device, dtype=dtype) for s in stages[1:]]
        cascade = cls(base, rest, name=name or str(path))
        overrides = index.get("base_defaults", {})
        if not isinstance(overrides, dict):
            raise GenError(f"{path / INDEX}: 'base_defaults' must map sampling defaults to values, got {overrides!r}")
        if overrides:
            cascade.set_base_defaults(**overrides)
        return cascade


__all__ = ["Cascade"]
