"""The toy world's cartoon objects, drawn from signed-distance primitives.

Every object lives in its own sprite box, the square [-1, 1]^2 with y pointing down,
and is a list of `Part`s painted back to front: a primitive shape (a signed distance
function, negative inside) and a paint. Paints are either relative to the object's
colour (`MAIN`, `DARK`, `LIGHT`) or fixed (eyes, wheels, trunks), which is what makes a
sprite independent of its colour: `gen.toyworld.raster` turns a drawing into five
channels (coefficient on the colour, fixed premultiplied RGB, alpha) once per
resolution, and colours each instance with one multiply-add.

Edges are anti-aliased analytically: a pixel's coverage is `clip(0.5 - d / px, 0, 1)`
with `d` the signed distance at its centre and `px` the pixel size, so the drawings
are exact at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

SDF = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Paints: a pair (m, f) meaning colour = m * object_colour + f (RGB in [0, 1]).
MAIN = (1.0, (0.0, 0.0, 0.0))
DARK = (0.62, (0.0, 0.0, 0.0))
LIGHT = (0.45, (0.55, 0.55, 0.55))


def fixed(r: int, g: int, b: int):
    return (0.0, (r / 255, g / 255, b / 255))


INK = fixed(28, 28, 32)  # outlines, pupils
WHITE = fixed(252, 252, 252)
PINK_NOSE = fixed(240, 120, 150)
BEAK = fixed(250, 160, 30)
TRUNK = fixed(120, 74, 38)
GLASS = fixed(190, 225, 250)
WINDOW = fixed(255, 236, 140)
HUB = fixed(170, 170, 170)
GOLD = fixed(255, 200, 20)
COFFEE = fixed(90, 55, 30)
STEM = fixed(40, 140, 50)

OUTLINE_WIDTH = 0.055  # in sprite units (the sprite box is 2 units wide)


# --- primitives: each returns the signed distance at points (x, y) -------------------

def circle(cx: float, cy: float, r: float) -> SDF:
    return lambda x, y: np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> SDF:
    """First-order distance to an ellipse, f / |grad f|: exact on the boundary."""
    c, s = math.cos(angle), math.sin(angle)

    def sdf(x, y):
        u = (x - cx) * c + (y - cy) * s
        v = -(x - cx) * s + (y - cy) * c
        f = (u / rx) ** 2 + (v / ry) ** 2 - 1.0
        g = 2.0 * np.sqrt((u / rx**2) ** 2 + (v / ry**2) ** 2) + 1e-9
        return f / g

    return sdf


def box(cx: float, cy: float, hw: float, hh: float, radius: float = 0.0, angle: float = 0.0) -> SDF:
    """Rounded rectangle of half-width hw and half-height hh (radius inside them)."""
    c, s = math.cos(angle), math.sin(angle)

    def sdf(x, y):
        u = np.abs((x - cx) * c + (y - cy) * s) - (hw - radius)
        v = np.abs(-(x - cx) * s + (y - cy) * c) - (hh - radius)
        outside = np.sqrt(np.maximum(u, 0.0) ** 2 + np.maximum(v, 0.0) ** 2)
        inside = np.minimum(np.maximum(u, v), 0.0)
        return outside + inside - radius

    return sdf


def segment(ax: float, ay: float, bx: float, by: float, r: float) -> SDF:
    """A capsule: points within r of the segment a-b."""
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy

    def sdf(x, y):
        h = np.clip(((x - ax) * dx + (y - ay) * dy) / length2, 0.0, 1.0)
        return np.sqrt((x - ax - h * dx) ** 2 + (y - ay - h * dy) ** 2) - r

    return sdf


def polygon(points) -> SDF:
    """Exact distance to a simple polygon (convex or not), sign by the even-odd rule."""
    pts = [(float(px), float(py)) for px, py in points]

    def sdf(x, y):
        d2 = np.full(np.broadcast(x, y).shape, np.inf)
        inside = np.zeros(d2.shape, dtype=bool)
        for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]):
            ex, ey = bx - ax, by - ay
            wx, wy = x - ax, y - ay
            h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
            d2 = np.minimum(d2, (wx - h * ex) ** 2 + (wy - h * ey) ** 2)
            crosses = (ay > y) != (by > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = ax + (y - ay) * ex / (by - ay if by != ay else 1.0)
            inside ^= crosses & (x < x_at)
        return np.where(inside, -1.0, 1.0) * np.sqrt(d2)

    return sdf


def ring(cx: float, cy: float, r: float, width: float) -> SDF:
    """An annulus of mean radius r."""
    return lambda x, y: np.abs(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r) - width / 2


def union(*sdfs: SDF) -> SDF:
    def sdf(x, y):
        d = sdfs[0](x, y)
        for other in sdfs[1:]:
            d = np.minimum(d, other(x, y))
        return d

    return sdf


def intersect(a: SDF, b: SDF) -> SDF:
    return lambda x, y: np.maximum(a(x, y), b(x, y))


def star_points(cx: float, cy: float, r_out: float, r_in: float, n: int = 5, rot: float = 0.0):
    return [
        (cx + (r_out if k % 2 == 0 else r_in) * math.sin(rot + k * math.pi / n),
         cy - (r_out if k % 2 == 0 else r_in) * math.cos(rot + k * math.pi / n))
        for k in range(2 * n)
    ]


@dataclass(frozen=True)
class Part:
    shape: SDF
    paint: tuple
    outline: bool = True


@dataclass(frozen=True)
class Drawing:
    """One object class: its parts, and where a hat sits (head top, head width)."""

    name: str
    plural: str
    parts: tuple[Part, ...]
    faces_right: bool = False  # mirrored when it moves left
    head: tuple[float, float, float] | None = None  # (x, y, width) of the head top


def _mirror(points):
    return [(-x, y) for x, y in points]


def _cat() -> tuple[Part, ...]:
    ear = [(-0.44, -0.48), (-0.40, -0.97), (-0.08, -0.72)]
    return (
        Part(segment(0.42, 0.80, 0.82, 0.18, 0.09), MAIN),
        Part(ellipse(0.0, 0.50, 0.50, 0.45), MAIN),
        Part(polygon(ear), MAIN),
        Part(polygon(_mirror(ear)), MAIN),
        Part(circle(0.0, -0.30, 0.45), MAIN),
        Part(polygon([(-0.36, -0.58), (-0.34, -0.82), (-0.17, -0.68)]), PINK_NOSE, False),
        Part(polygon([(0.36, -0.58), (0.34, -0.82), (0.17, -0.68)]), PINK_NOSE, False),
        Part(ellipse(-0.17, -0.36, 0.10, 0.12), WHITE),
        Part(ellipse(0.17, -0.36, 0.10, 0.12), WHITE),
        Part(ellipse(-0.17, -0.35, 0.04, 0.08), INK, False),
        Part(ellipse(0.17, -0.35, 0.04, 0.08), INK, False),
        Part(polygon([(-0.07, -0.20), (0.07, -0.20), (0.0, -0.12)]), PINK_NOSE, False),
        Part(union(segment(0.10, -0.13, 0.40, -0.18, 0.012), segment(0.10, -0.10, 0.40, -0.05, 0.012),
                   segment(-0.10, -0.13, -0.40, -0.18, 0.012), segment(-0.10, -0.10, -0.40, -0.05, 0.012)),
             INK, False),
        Part(ellipse(0.0, 0.62, 0.26, 0.26), LIGHT, False),
    )


def _dog() -> tuple[Part, ...]:
    return (
        Part(segment(0.40, 0.70, 0.80, 0.20, 0.08), MAIN),
        Part(ellipse(0.0, 0.52, 0.50, 0.44), MAIN),
        Part(circle(0.0, -0.28, 0.42), MAIN),
        Part(ellipse(-0.43, -0.22, 0.15, 0.34, 0.25), DARK),
        Part(ellipse(0.43, -0.22, 0.15, 0.34, -0.25), DARK),
        Part(ellipse(0.0, -0.07, 0.24, 0.17), LIGHT),
        Part(ellipse(0.0, -0.16, 0.10, 0.07), INK, False),
        Part(ellipse(0.0, 0.07, 0.06, 0.08), PINK_NOSE),
        Part(circle(-0.16, -0.40, 0.065), INK, False),
        Part(circle(0.16, -0.40, 0.065), INK, False),
        Part(ellipse(0.0, 0.64, 0.24, 0.24), LIGHT, False),
    )


def _bird() -> tuple[Part, ...]:
    return (
        Part(polygon([(-0.97, -0.05), (-0.45, 0.02), (-0.50, 0.32), (-0.97, 0.30)]), DARK),
        Part(union(segment(-0.05, 0.45, -0.08, 0.82, 0.035), segment(0.15, 0.45, 0.14, 0.82, 0.035)),
             BEAK, False),
        Part(ellipse(-0.08, 0.14, 0.58, 0.42), MAIN),
        Part(circle(0.42, -0.30, 0.31), MAIN),
        Part(ellipse(-0.18, 0.10, 0.34, 0.20, -0.35), DARK),
        Part(polygon([(0.66, -0.40), (0.98, -0.28), (0.66, -0.16)]), BEAK),
        Part(circle(0.50, -0.36, 0.09), WHITE),
        Part(circle(0.53, -0.36, 0.045), INK, False),
    )


def _fish() -> tuple[Part, ...]:
    return (
        Part(polygon([(-0.97, -0.48), (-0.52, 0.0), (-0.97, 0.48)]), DARK),
        Part(polygon([(-0.25, -0.30), (0.05, -0.62), (0.25, -0.30)]), DARK),
        Part(ellipse(0.05, 0.0, 0.68, 0.44), MAIN),
        Part(intersect(ellipse(0.05, 0.0, 0.68, 0.44), box(-0.05, 0.0, 0.08, 0.5)), LIGHT, False),
        Part(circle(0.44, -0.10, 0.11), WHITE),
        Part(circle(0.47, -0.10, 0.055), INK, False),
        Part(segment(0.62, 0.14, 0.70, 0.10, 0.02), INK, False),
    )


def _ball() -> tuple[Part, ...]:
    return (
        Part(circle(0.0, 0.0, 0.95), MAIN),
        Part(intersect(circle(0.0, 0.0, 0.95), box(0.0, 0.0, 1.0, 0.20)), WHITE, False),
        Part(circle(0.42, -0.52, 0.14), WHITE, False),
        Part(circle(-0.35, 0.52, 0.12), DARK, False),
    )


def _hat() -> tuple[Part, ...]:
    return (
        Part(box(0.0, 0.03, 0.60, 0.68, 0.05), MAIN),
        Part(box(0.0, 0.48, 0.60, 0.11), DARK, False),
        Part(box(0.0, 0.78, 0.97, 0.13, 0.08), MAIN),
    )


def _house() -> tuple[Part, ...]:
    return (
        Part(box(0.50, -0.62, 0.10, 0.22), TRUNK),
        Part(box(0.0, 0.36, 0.72, 0.60), MAIN),
        Part(polygon([(-0.97, -0.18), (0.0, -0.97), (0.97, -0.18)]), DARK),
        Part(box(0.32, 0.66, 0.16, 0.30, 0.03), TRUNK),
        Part(box(-0.32, 0.28, 0.19, 0.17), WINDOW),
        Part(union(box(-0.32, 0.28, 0.015, 0.17), box(-0.32, 0.28, 0.19, 0.015)), INK, False),
    )


def _tree() -> tuple[Part, ...]:
    return (
        Part(box(0.0, 0.55, 0.15, 0.43), TRUNK),
        Part(union(circle(0.0, -0.40, 0.57), circle(-0.42, -0.05, 0.42), circle(0.42, -0.05, 0.42)), MAIN),
        Part(circle(-0.18, -0.55, 0.12), LIGHT, False),
    )


def _car() -> tuple[Part, ...]:
    return (
        Part(polygon([(-0.58, 0.0), (-0.36, -0.48), (0.30, -0.48), (0.58, 0.0)]), MAIN),
        Part(box(0.0, 0.18, 0.97, 0.26, 0.12), MAIN),
        Part(polygon([(-0.46, -0.04), (-0.30, -0.38), (-0.04, -0.38), (-0.04, -0.04)]), GLASS),
        Part(polygon([(0.04, -0.04), (0.04, -0.38), (0.25, -0.38), (0.46, -0.04)]), GLASS),
        Part(circle(-0.52, 0.44, 0.23), INK),
        Part(circle(0.52, 0.44, 0.23), INK),
        Part(circle(-0.52, 0.44, 0.10), HUB, False),
        Part(circle(0.52, 0.44, 0.10), HUB, False),
        Part(box(0.90, 0.08, 0.06, 0.06, 0.02), WINDOW, False),
    )


def _star() -> tuple[Part, ...]:
    return (Part(polygon(star_points(0.0, 0.06, 0.98, 0.42)), MAIN),)


def _flower() -> tuple[Part, ...]:
    petals = [circle(0.36 * math.cos(a), -0.40 + 0.36 * math.sin(a), 0.24)
              for a in (k * math.pi / 3 for k in range(6))]
    return (
        Part(segment(0.0, -0.2, 0.0, 0.96, 0.05), STEM),
        Part(ellipse(0.22, 0.50, 0.22, 0.09, -0.5), STEM),
        Part(union(*petals), MAIN),
        Part(circle(0.0, -0.40, 0.19), GOLD),
    )


def _cup() -> tuple[Part, ...]:
    return (
        Part(ring(0.52, 0.05, 0.27, 0.13), MAIN),
        Part(polygon([(-0.62, -0.62), (0.50, -0.62), (0.38, 0.80), (-0.50, 0.80)]), MAIN),
        Part(ellipse(-0.06, -0.62, 0.56, 0.11), COFFEE),
        Part(box(-0.06, 0.12, 0.47, 0.07), LIGHT, False),
    )


DRAWINGS: dict[str, Drawing] = {
    d.name: d
    for d in (
        Drawing("cat", "cats", _cat(), head=(0.0, -0.64, 0.80)),
        Drawing("dog", "dogs", _dog(), head=(0.0, -0.62, 0.78)),
        Drawing("bird", "birds", _bird(), faces_right=True, head=(0.42, -0.56, 0.56)),
        Drawing("fish", "fish", _fish(), faces_right=True),
        Drawing("ball", "balls", _ball()),
        Drawing("hat", "hats", _hat()),
        Drawing("house", "houses", _house()),
        Drawing("tree", "trees", _tree()),
        Drawing("car", "cars", _car(), faces_right=True),
        Drawing("star", "stars", _star()),
        Drawing("flower", "flowers", _flower()),
        Drawing("cup", "cups", _cup()),
    )
}

OBJECTS: tuple[str, ...] = tuple(DRAWINGS)
WEARERS: tuple[str, ...] = tuple(name for name, d in DRAWINGS.items() if d.head is not None)

# The named colours (RGB 0-255). Every caption's colour word is one of these.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (250, 215, 35),
    "green": (45, 165, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "pink": (245, 125, 190),
    "brown": (135, 82, 40),
    "black": (25, 25, 25),
    "white": (250, 250, 250),
    "gray": (140, 140, 140),
}
