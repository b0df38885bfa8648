"""The toy world as torch datasets: index i is toy sample i of the seed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from gen.data.folders import check_channels, to_model_range
from gen.errors import GenError
from gen.toyworld import toy_clip, toy_image


def to_tensor(pixels: np.ndarray, channels: int = 3) -> torch.Tensor:
    """uint8 (H, W, 3) -> (C, H, W), or clip (T, H, W, 3) -> (C, T, H, W), in [-1, 1]."""
    if channels == 1:  # luma as Pillow's "L" mode computes it
        r, g, b = (pixels[..., i].astype(np.uint32) for i in range(3))
        pixels = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
    x = to_model_range(pixels)  # (..., C, H, W)
    return x.movedim(-3, 0) if x.dim() == 4 else x


def _positive(name: str, value, kind=int):
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise GenError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
    return value


class _ToyDataset(Dataset):
    """`n` samples of the toy world; subclasses draw sample i in `draw(i)`."""

    key = ""

    def __init__(self, n: int, size: int, seed: int, channels: int):
        self.n, self.size, self.seed = _positive("n", n), _positive("size", size), seed
        self.channels = check_channels(channels)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        s = self.draw(i % self.n)
        return {self.key: to_tensor(s.pixels, self.channels), "text": s.caption, "attributes": s.attributes}


class ToyImageDataset(_ToyDataset):
    """`n` toy-world images of `size` pixels: {"image", "text", "attributes"}."""

    key = "image"

    def __init__(self, n: int = 100_000, size: int = 64, seed: int = 0, channels: int = 3, kind: str | None = None):
        super().__init__(n, size, seed, channels)
        self.kind = kind  # only scenes of this kind (single, wearing, relation, count)
        if kind is not None:
            toy_image(0, 1, seed, kind)  # an unknown kind fails here, naming the known ones

    def draw(self, i: int):
        return toy_image(i, self.size, self.seed, self.kind)


class ToyVideoDataset(_ToyDataset):
    """`n` toy-world clips: {"video": (C, T, H, W), "text", "attributes"}."""

    key = "video"

    def __init__(self, n: int = 10_000, size: int = 32, frames: int = 16, fps: float = 8.0,
                 seed: int = 0, channels: int = 3):
        super().__init__(n, size, seed, channels)
        self.frames = _positive("frames", frames)
        self.fps = _positive("fps", fps, (int, float))

    def draw(self, i: int):
        return toy_clip(i, self.size, self.frames, self.fps, self.seed)


class ToyFirstFrameDataset(_ToyDataset):
    """Frame 0 of `n` toy-world clips with the clip's caption: {"image", "text", "attributes"}.
    What the image stage of a video cascade draws: the first frame of the clip the caption
    asks for (an object placed where its motion starts: low for "moving up", small for
    "getting bigger"), which the video stage then animates. Frame 0 does not depend on the
    clip's length or frame rate."""

    key = "image"

    def draw(self, i: int):
        clip = toy_clip(i, self.size, frames=1, seed=self.seed)
        return replace(clip, pixels=clip.pixels[0])
