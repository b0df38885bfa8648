"""The toy world: a procedural, seeded, infinite source of captioned images and clips.

    from gen.toyworld import toy_image, toy_clip
    s = toy_image(7, size=64, seed=0)       # s.pixels: uint8 (64, 64, 3)
    s.caption, s.attributes                 # "a red cat in a blue hat", {...}
    c = toy_clip(7, size=32, frames=16, fps=8)  # c.pixels: uint8 (16, 32, 32, 3)

(seed, index) fixes a sample bit for bit on any machine. Time is continuous, so the
same clip renders at any frame count, frame rate and resolution: frames of a clip at
8 fps are every third frame of it at 24 fps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gen.toyworld.captions import caption
from gen.toyworld.render import attributes, frame_times, render_clip, render_image
from gen.toyworld.rng import Stream
from gen.toyworld.scene import (CLIP_SECONDS, IMAGE_KINDS, MOTIONS, RELATIONS, Scene,
                                sample_clip_scene, sample_image_scene)
from gen.toyworld.shapes import COLORS, OBJECTS

_IMAGE_SALT, _CLIP_SALT = 1, 2

__all__ = ["Sample", "toy_image", "toy_clip", "image_scene", "clip_scene", "OBJECTS", "COLORS",
           "RELATIONS", "MOTIONS", "IMAGE_KINDS", "CLIP_SECONDS", "Scene"]


@dataclass(frozen=True)
class Sample:
    pixels: np.ndarray  # uint8 (H, W, 3) for images, (T, H, W, 3) for clips
    caption: str
    attributes: dict


def image_scene(index: int, seed: int = 0, kind: str | None = None) -> tuple[Scene, str]:
    """Scene and caption of image `index`; `kind` (single, wearing, relation, count)
    restricts the draw to one kind of scene (a different stream from the default)."""
    if kind is not None and kind not in IMAGE_KINDS:
        from gen.errors import GenError

        raise GenError(f"unknown scene kind {kind!r}; known: {', '.join(IMAGE_KINDS)}")
    rng = Stream(seed, index, _IMAGE_SALT)
    scene = sample_image_scene(rng, kind)
    return scene, caption(scene, rng)


def clip_scene(index: int, seed: int = 0) -> tuple[Scene, str]:
    rng = Stream(seed, index, _CLIP_SALT)
    scene = sample_clip_scene(rng)
    return scene, caption(scene, rng)


def _check(size: int, frames: int = 1, fps: float = 1.0) -> None:
    from gen.errors import GenError

    if not (isinstance(size, int) and size > 0):
        raise GenError(f"size must be a positive integer, got {size!r}")
    if not (isinstance(frames, int) and frames > 0):
        raise GenError(f"frames must be a positive integer, got {frames!r}")
    if not fps > 0:
        raise GenError(f"fps must be positive, got {fps!r}")


def toy_image(index: int, size: int = 64, seed: int = 0, kind: str | None = None) -> Sample:
    """Image `index` of the toy world with this seed (of one `kind` of scene if given)."""
    _check(size)
    scene, text = image_scene(index, seed, kind)
    return Sample(render_image(scene, size), text, attributes(scene, text))


def toy_clip(index: int, size: int = 32, frames: int = 16, fps: float = 8.0, seed: int = 0) -> Sample:
    """Clip `index` of the toy world: `frames` frames at t = k / fps seconds."""
    _check(size, frames, fps)
    scene, text = clip_scene(index, seed)
    record = attributes(scene, text, frame_times(frames, fps))
    record["fps"] = fps
    return Sample(render_clip(scene, size, frames, fps), text, record)
