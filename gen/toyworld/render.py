"""Scenes to pixels and records: images, clips, and their exact attributes."""

from __future__ import annotations

import math

import numpy as np

from gen.toyworld.raster import composite
from gen.toyworld.scene import GRASS, PLAIN_BACKGROUNDS, SKY, Obj, Scene
from gen.toyworld.shapes import COLORS

_RGB = {name: tuple(c / 255 for c in rgb) for name, rgb in COLORS.items()}


def _background(scene: Scene, size: int) -> np.ndarray:
    canvas = np.empty((size, size, 3), dtype=np.float32)
    if scene.background == "grass":
        edge = scene.horizon * size
        row = int(edge)
        canvas[:row] = np.asarray(SKY, np.float32) / 255
        canvas[row:] = np.asarray(GRASS, np.float32) / 255
        if row < size:  # the row the horizon crosses, by coverage
            cover = np.float32(row + 1 - edge)
            canvas[row] = (np.asarray(SKY, np.float32) * (1 - cover) + np.asarray(GRASS, np.float32) * cover) / 255
    else:
        canvas[:] = np.asarray(PLAIN_BACKGROUNDS[scene.background], np.float32) / 255
    return canvas


def _draw(canvas: np.ndarray, objects: tuple[Obj, ...]) -> np.ndarray:
    for o in objects:
        composite(canvas, o.name, _RGB[o.color], o.cx, o.cy, o.scale, o.angle, o.flip)
    return canvas


def _to_uint8(canvas: np.ndarray) -> np.ndarray:
    return (np.clip(canvas, 0.0, 1.0) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def render_image(scene: Scene, size: int, t: float = 0.0) -> np.ndarray:
    """The scene at time t as uint8 (size, size, 3)."""
    return _to_uint8(_draw(_background(scene, size), scene.at(t)))


def frame_times(frames: int, fps: float) -> list[float]:
    return [k / fps for k in range(frames)]


def render_clip(scene: Scene, size: int, frames: int, fps: float) -> np.ndarray:
    """Frames at t = k / fps as uint8 (frames, size, size, 3)."""
    background = _background(scene, size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for k, t in enumerate(frame_times(frames, fps)):
        out[k] = _to_uint8(_draw(background.copy(), scene.at(t)))
    return out


def _r(x: float) -> float:
    return round(x, 5)


def object_record(o: Obj) -> dict:
    return {
        "class": o.name,
        "color": o.color,
        "size": o.size,
        "center": [_r(o.cx), _r(o.cy)],
        "bbox": [_r(v) for v in o.box],
        "scale": _r(o.scale),
        "angle": _r(math.degrees(o.angle) % 360.0),
        "flip": o.flip,
    }


def attributes(scene: Scene, caption: str, times: list[float] | None = None) -> dict:
    """The structured record of a sample: JSON-ready, coordinates in [0, 1] of the width.

    `times` (clips) adds the motion and each frame's object placements.
    """
    record = {
        "caption": caption,
        "kind": scene.kind,
        "background": "grass" if scene.background == "grass" else "plain",
        "objects": [object_record(o) for o in scene.objects],
        "relations": [],
        "count": len(scene.objects) if scene.kind in ("single", "count", "motion") else 1,
    }
    if scene.background == "grass":
        record["horizon"] = _r(scene.horizon)
    if scene.relation is not None:
        s, rel, o = scene.relation
        record["relations"].append({"subject": s, "relation": rel, "object": o})
    if scene.motion is not None and times is not None:
        m = scene.motion
        record["motion"] = {
            "kind": m.kind,
            "velocity": [_r(v) for v in m.velocity],
            "rolling": m.roll,
            "bounce_height": _r(m.bounce_height),
            "bounce_period": _r(m.bounce_period),
            "growth": _r(m.growth),
            "spin": _r(math.degrees(m.spin)),
        }
        record["frames"] = [
            {"t": _r(t), "objects": [object_record(o) for o in scene.at(t)]} for t in times
        ]
    return record
