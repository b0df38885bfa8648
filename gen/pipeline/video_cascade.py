"""The video cascade (issue 17, DESIGN.md): text -> image -> video, then temporal and
spatial super-resolution, each stage its own pipeline.

    from gen.pipeline import VideoCascade
    pipe = VideoCascade(image, video, temporal=video, spatial=[sr_4x])
    clips = pipe.generate(["a ball rolling left"], [0])           # the last stage's output
    base = pipe.generate(["a ball rolling left"], [0], fps=4, size=32)   # stop earlier

1. Frame 0 comes from a text-to-image pipeline (or cascade), which gets objects and
   colours right (Emu Video's factorisation, Girdhar et al. 2023), or from `init_image`;
   best one that draws the first frames of clips (the shipped `toy-frame0-dit`).
2. A masked-frame video model animates it: frame 0 known, the clip's other frames drawn
   (`VideoPipeline.generate(init_image=...)`), at the base size and frame rate.
3. Temporal super-resolution doubles the frame rate (`VideoPipeline.interpolate`: the
   clip's frames known at the even positions); the same masked model may do it.
4. Spatial super-resolution stages enlarge every frame; a clip's frames share their
   noise (seed i for every frame of clip i), which keeps them from flickering.

Clip i draws every stage's noise from seed i. A folder holds `model_index.json`
({"_class": "VideoCascade", "kind": "video", "format": 1, "image": ENTRY, "video": ENTRY,
"temporal": ENTRY | "video" | null, "spatial": [ENTRY, ...], "stage_defaults": {ROLE:
{SETTING: VALUE}}}; an ENTRY is a subfolder or {"shipped": NAME}; "temporal": "video" reuses
the video stage; "stage_defaults", optional, holds the cascade's own sampler, steps or cfg
for its image or temporal stage, and how the temporal stage makes the frames between given ones
(inbetween: "model" or "motion", VideoPipeline.interpolate), which a stage's folder does not) and a
folder per stage.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from gen.errors import GenError
from gen.pipeline.folder import FORMAT, INDEX, write_folder
from gen.pipeline.superres import SuperResolution
from gen.pipeline.video import INBETWEENS, VideoPipeline


class VideoCascade:
    kind = "video"

    def __init__(self, image, video: VideoPipeline, temporal: VideoPipeline | None = None,
                 spatial: list[SuperResolution] = (), name: str = ""):
        from gen.pipeline.cascade import Cascade
        from gen.pipeline.image import Pipeline

        if not (isinstance(image, Cascade) or (isinstance(image, Pipeline) and image.kind == "image")):
            raise GenError(f"a video cascade's first stage draws frame 0: a text-to-image pipeline, "
                           f"got {type(image).__name__}")
        for role, stage in (("video", video), ("temporal", temporal)):
            if stage is not None and not isinstance(stage, VideoPipeline):
                raise GenError(f"the {role} stage must be a video pipeline, got {type(stage).__name__}")
        for k, stage in enumerate(spatial):
            if not isinstance(stage, SuperResolution):
                raise GenError(f"spatial stage {k + 1} is a {type(stage).__name__}, not a super-resolution stage")
        self.image, self.video, self.temporal, self.spatial, self.name = image, video, temporal, list(spatial), name
        self.stage_defaults: dict[str, dict] = {}  # role -> sampling settings the cascade runs that stage with

    def set_stage_defaults(self, role: str, **settings) -> None:
        """Run the `image` or `temporal` stage with these sampling settings (sampler, steps,
        cfg) in this cascade, the stage's own folder untouched; saved in model_index.json.
        The temporal stage's give way to settings passed to `generate` (which are the video
        stage's and the temporal one's)."""
        if role not in STAGE_ROLES:
            raise GenError(f"stage_defaults: {role!r} is not a stage that takes them; known: {', '.join(STAGE_ROLES)}")
        unknown = sorted(set(settings) - set(STAGE_SETTINGS[role]))
        if unknown:
            raise GenError(f"stage_defaults: {unknown[0]!r} is not a setting the {role} stage takes here; "
                           f"known: {', '.join(STAGE_SETTINGS[role])}")
        if settings.get("inbetween", "model") not in INBETWEENS:
            raise GenError(f"stage_defaults: the temporal stage's inbetween must be one of {', '.join(INBETWEENS)}, "
                           f"got {settings['inbetween']!r}")
        self.stage_defaults[role] = {**self.stage_defaults.get(role, {}), **settings}

    def stage_settings(self, role: str, **given) -> dict:
        """The sampling settings the cascade runs stage `role` with: its stage_defaults, then
        those of `given` that are not None."""
        return {**self.stage_defaults.get(role, {}), **{k: v for k, v in given.items() if v is not None}}

    # --- what it draws ------------------------------------------------------------------

    @property
    def sizes(self) -> list[int]:
        """The frame side after the video stage and after each spatial stage."""
        sizes = [self.video.defaults.size]
        for stage in self.spatial:
            sizes.append(sizes[-1] * stage.defaults.scale)
        return sizes

    @property
    def rates(self) -> list[tuple[int, float]]:
        """(frames, fps) after the video stage, and after temporal super-resolution."""
        d = self.video.defaults
        base = (d.frames or self.video.denoiser.config.frames, d.fps or 8.0)
        return [base] + ([(2 * base[0], 2 * base[1])] if self.temporal is not None else [])

    @property
    def defaults(self):
        """The video stage's sampling defaults, at the cascade's output size and rate."""
        frames, fps = self.rates[-1]
        return replace(self.video.defaults, size=self.sizes[-1], frames=frames, fps=fps)

    @property
    def device(self) -> torch.device:
        return self.video.device

    @property
    def precision(self) -> str:
        return self.video.precision

    @precision.setter
    def precision(self, value: str) -> None:
        for stage in self.stages():
            stage.precision = value

    @property
    def compute_precision(self) -> str:
        return self.video.compute_precision

    def stages(self) -> list:
        out = [self.image, self.video] + ([self.temporal] if self.temporal is not None else []) + self.spatial
        return list({id(s): s for s in out}.values())  # the temporal stage may be the video one

    def plan(self, size: int | None = None, fps: float | None = None, frames: int | None = None
             ) -> tuple[int, int, int]:
        """(spatial stages to run, 1 if temporal SR runs else 0, frames the video stage draws)
        for an output of `size` pixels at `fps` (default: the last stage's) and `frames`
        frames (default: that rate's). More frames than the video stage draws at once are
        added by extending its clip (`VideoPipeline.extend`) before temporal SR; fewer are
        the first ones. A size or rate the cascade cannot reach names those it can."""
        sizes, rates = self.sizes, self.rates
        if size is not None and size not in sizes:
            raise GenError(f"--size {size}: this video cascade draws frames of {', '.join(map(str, sizes))} "
                           f"pixels (the video stage, then each spatial stage)")
        level = len(rates) - 1
        if fps is not None:
            matches = [i for i, (_, r) in enumerate(rates) if abs(r - fps) < 1e-6]
            if not matches:
                raise GenError(f"--fps {fps:g}: this video cascade draws clips at "
                               f"{' or '.join(f'{r:g}' for _, r in rates)} fps (--frames sets their length)")
            level = matches[0]
        if frames is not None and frames < 1:
            raise GenError(f"--frames {frames}: a clip has at least one frame")
        base = rates[0][0]
        if frames is not None:
            base = max(base, -(-frames // (2 if level else 1)))  # temporal SR doubles the frames
        return (len(sizes) - 1 if size is None else sizes.index(size)), level, base

    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None, sampler: str | None = None,
                 cfg: float | None = None, negative: str | None = None, size: int | None = None,
                 fps: float | None = None, frames: int | None = None, init_image: torch.Tensor | None = None,
                 callback=None, frame_cfg: float = 1.0) -> torch.Tensor:
        """Clips (B, C, T, H, W) in [-1, 1]. `steps`/`sampler`/`cfg`/`negative` are the video
        stage's (and the temporal one's); `frame_cfg` the video stage's guidance on frame 0
        (VideoPipeline.generate); every other stage runs at its own defaults.
        `init_image` ((C, H, W) or (B, C, H, W) in [-1, 1]) is frame 0 instead of the image stage's."""
        count, temporal, base = self.plan(size, fps, frames)
        video_args = dict(steps=steps, sampler=sampler, cfg=cfg, negative=negative)
        if init_image is None:  # at its own defaults, or the cascade's for it
            first = self.image.generate(prompts, seeds, negative=negative, **self.stage_settings("image"))
        else:
            first = init_image
        clip = self.video.generate(prompts, seeds, frames=base, init_image=first, callback=callback,
                                   frame_cfg=frame_cfg, **video_args)
        if temporal:
            clip = self.temporal.interpolate(prompts, clip, seeds, **self.stage_settings("temporal", **video_args))
        if frames is not None:
            clip = clip[:, :, :frames]
        for stage in self.spatial[:count]:
            b, c, t = clip.shape[:3]
            up = stage.upscale(clip.transpose(1, 2).flatten(0, 1), [s for s in seeds for _ in range(t)])
            clip = up.unflatten(0, (b, t)).transpose(1, 2)
        return clip

    __call__ = VideoPipeline.__call__  # one list of PIL frames per clip, the same seeds rule

    # --- files ------------------------------------------------------------------------

    def save_pretrained(self, path, overwrite: bool = False, dtype: torch.dtype | None = None,
                        shipped: bool = False) -> Path:
        """Write the folder (image/, video/, temporal/ unless it is the video stage, sr-1/, ...),
        assembled beside and swapped in whole. `shipped`: a stage loaded by a shipped name is
        stored as that name, not copied."""
        from gen.pipeline.weights import shipped_models

        names = set(shipped_models()) - {"default"} if shipped else set()

        def entry(tmp: Path, folder: str, stage):
            if stage.name in names:
                return {"shipped": stage.name}
            stage.save_pretrained(tmp / folder, dtype=dtype)
            return folder

        def fill(tmp: Path) -> None:
            index = {"_class": "VideoCascade", "kind": "video", "format": FORMAT,
                     "image": entry(tmp, "image", self.image), "video": entry(tmp, "video", self.video),
                     "temporal": None if self.temporal is None else "video" if self.temporal is self.video
                     else entry(tmp, "temporal", self.temporal),
                     "spatial": [entry(tmp, f"sr-{k + 1}", s) for k, s in enumerate(self.spatial)]}
            if self.stage_defaults:
                index["stage_defaults"] = self.stage_defaults
            (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")

        return write_folder(path, overwrite, fill)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device="cpu", dtype: torch.dtype | None = None) -> "VideoCascade":
        from gen.pipeline import load

        cascade = load(name_or_path, device=device, dtype=dtype)
        if not isinstance(cascade, VideoCascade):
            raise GenError(f"{name_or_path} is not a video cascade")
        return cascade

    @classmethod
    def from_folder(cls, path: Path, index: dict, device="cpu", dtype: torch.dtype | None = None,
                    name: str = "") -> "VideoCascade":
        from gen.pipeline import load
        from gen.pipeline.folder import stage_source

        def stage(key, entry, kind):
            source = stage_source(path, entry, f"{key!r} must name a stage subfolder (or {{\"shipped\": NAME}})")
            found = load(source, device=device, dtype=dtype)
            if kind is not None and not isinstance(found, kind):
                raise GenError(f"{path / INDEX}: the {key} stage is a {type(found).__name__}, not a "
                               f"{kind.__name__}")
            return found

        spatial = index.get("spatial", [])
        if not isinstance(spatial, list):
            raise GenError(f"{path / INDEX}: 'spatial' must list the super-resolution stages, got {spatial!r}")
        video = stage("video", index.get("video"), VideoPipeline)
        temporal = index.get("temporal")
        temporal = None if temporal is None else video if temporal == "video" else \
            stage("temporal", temporal, VideoPipeline)
        cascade = cls(stage("image", index.get("image"), None), video, temporal,
                      [stage(f"spatial {k + 1}", s, SuperResolution) for k, s in enumerate(spatial)],
                      name=name or str(path))
        own = index.get("stage_defaults", {})
        if not isinstance(own, dict) or not all(isinstance(v, dict) for v in own.values()):
            raise GenError(f"{path / INDEX}: 'stage_defaults' must map a stage (image, temporal) to its sampling "
                           f"settings, got {own!r}")
        for role, settings in own.items():
            cascade.set_stage_defaults(role, **settings)
        return cascade


# the stages a video cascade can give its own sampling settings, and those settings (the temporal
# stage's inbetween: how it makes the frames between given ones, VideoPipeline.interpolate)
STAGE_SETTINGS = {"image": ("sampler", "steps", "cfg"), "temporal": ("sampler", "steps", "cfg", "inbetween")}
STAGE_ROLES = tuple(STAGE_SETTINGS)


__all__ = ["VideoCascade"]
