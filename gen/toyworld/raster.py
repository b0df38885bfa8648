"""Rasterising toy-world objects: colour-independent sprites, sampled bilinearly.

A drawing is rendered once per resolution level into a sprite of five channels,
premultiplied over transparency:

    colour(x) = object_rgb * M(x) + F(x),    alpha(x) = A(x)

(painting part k with coverage a_k and paint m_k * rgb + f_k over the parts below
it is linear in rgb, so M and F accumulate like colour does). Placing an object is
then one inverse affine map of the output pixels into the sprite (translation, scale,
rotation, mirror), a bilinear lookup, and one "over" composite. Levels step by about
sqrt(2), so a lookup never shrinks a sprite by more than 1.5x and edges stay
anti-aliased.

All arithmetic is elementwise IEEE float32/float64 (no reductions, no transcendental
functions on pixels), so a render is identical bit for bit on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gen.toyworld.shapes import DRAWINGS, INK, OUTLINE_WIDTH

LEVELS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


@lru_cache(maxsize=None)
def sprite(name: str, size: int) -> np.ndarray:
    """The drawing `name` at `size` x `size` pixels: float32 (size+2, size+2, 5).

    Channels are (M, F_r, F_g, F_b, A); a one-pixel transparent border makes
    out-of-range lookups read zeros.
    """
    px = 2.0 / size
    centres = (np.arange(size, dtype=np.float64) + 0.5) * px - 1.0
    x, y = centres[None, :], centres[:, None]
    m = np.zeros((size, size))
    f = np.zeros((size, size, 3))
    a = np.zeros((size, size))

    def paint(coverage, paint_spec):
        nonlocal m, f, a
        pm, pf = paint_spec
        keep = 1.0 - coverage
        m = m * keep + coverage * pm
        f = f * keep[..., None] + coverage[..., None] * np.asarray(pf)
        a = a * keep + coverage

    for part in DRAWINGS[name].parts:
        d = np.broadcast_to(part.shape(x, y), (size, size))
        if part.outline:
            paint(np.clip(0.5 - (d - OUTLINE_WIDTH) / px, 0.0, 1.0), INK)
        paint(np.clip(0.5 - d / px, 0.0, 1.0), part.paint)

    out = np.zeros((size + 2, size + 2, 5), dtype=np.float32)
    out[1:-1, 1:-1, 0] = m
    out[1:-1, 1:-1, 1:4] = f
    out[1:-1, 1:-1, 4] = a
    out.setflags(write=False)
    return out


def level_for(pixels: float) -> int:
    """The smallest sprite level at least `pixels` wide (a new size past the table)."""
    for level in LEVELS:
        if level >= pixels:
            return level
    return int(math.ceil(pixels))


@dataclass(frozen=True)
class Silhouette:
    """Geometry of a drawing in sprite units: tight box and convex-hull points."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    hull: np.ndarray  # (K, 2) points whose rotations bound the drawing


@lru_cache(maxsize=None)
def silhouette(name: str) -> Silhouette:
    """Measured from a 256-pixel sprite: pixels with alpha above one half."""
    size = 256
    alpha = sprite(name, size)[1:-1, 1:-1, 4]
    ys, xs = np.nonzero(alpha > 0.5)
    px = 2.0 / size
    x0, x1 = xs.min() * px - 1.0, (xs.max() + 1) * px - 1.0
    y0, y1 = ys.min() * px - 1.0, (ys.max() + 1) * px - 1.0
    corners = np.stack([
        np.concatenate([xs, xs + 1, xs, xs + 1]) * px - 1.0,
        np.concatenate([ys, ys, ys + 1, ys + 1]) * px - 1.0,
    ], axis=1)
    return Silhouette((float(x0), float(y0), float(x1), float(y1)), _convex_hull(corners))


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain on unique points."""
    pts = sorted(set(map(tuple, points.round(6).tolist())))

    def half(seq):
        chain: list = []
        for p in seq:
            while len(chain) >= 2 and (
                (chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1])
                - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])
            ) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def placed_box(name: str, cx: float, cy: float, scale: float, angle: float = 0.0, flip: bool = False):
    """Bounding box (x0, y0, x1, y1) in canvas units of a placed object."""
    if angle == 0.0:
        x0, y0, x1, y1 = silhouette(name).box
        if flip:
            x0, x1 = -x1, -x0
        half = scale / 2
        return (cx + half * x0, cy + half * y0, cx + half * x1, cy + half * y1)
    hull = silhouette(name).hull
    hx = -hull[:, 0] if flip else hull[:, 0]
    c, s = math.cos(angle), math.sin(angle)
    half = scale / 2
    xs = cx + half * (c * hx - s * hull[:, 1])
    ys = cy + half * (s * hx + c * hull[:, 1])
    return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


def _taps(coord: np.ndarray, level: int):
    """Bilinear taps along one axis of a bordered sprite: ((i0, i1), weight of i1)."""
    coord = np.clip(coord, np.float32(0.0), np.float32(level + 1))
    i0 = np.floor(coord)
    weight = coord - i0
    i0 = i0.astype(np.intp)
    return (i0, np.minimum(i0 + 1, level + 1)), weight


def composite(canvas: np.ndarray, name: str, rgb, cx: float, cy: float, scale: float,
              angle: float = 0.0, flip: bool = False) -> None:
    """Paint one object onto `canvas` (float32 (H, W, 3) in [0, 1]) in place.

    (cx, cy) is the centre of the sprite box and `scale` its side, both as fractions
    of the canvas width; `angle` turns it clockwise on screen (radians, y down);
    `flip` mirrors it left-right before turning.
    """
    height, width, _ = canvas.shape
    side = scale * width
    level = level_for(side)
    tex = sprite(name, level)
    stride = level + 2
    flat = tex.reshape(-1, 5)

    c, s = math.cos(angle), math.sin(angle)
    reach = side / 2 * (abs(c) + abs(s)) + 1.0
    px_c, py_c = cx * width, cy * width
    x0, x1 = max(int(px_c - reach), 0), min(int(math.ceil(px_c + reach)), width)
    y0, y1 = max(int(py_c - reach), 0), min(int(math.ceil(py_c + reach)), height)
    if x0 >= x1 or y0 >= y1:
        return

    # Output pixel centres relative to the object centre, in output pixels; then the
    # inverse rotation, and output pixels -> sprite pixels (+1 for the border).
    dx = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - px_c)
    dy = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - py_c)
    k = np.float32(level / side)
    mirror = np.float32(-k if flip else k)
    centre = np.float32(level / 2 + 0.5)
    if angle == 0.0:  # axis-aligned: the lookup separates into rows, then columns
        (iv, wv), (iu, wu) = _taps(dy * k + centre, level), _taps(dx * mirror + centre, level)
        rows = tex[iv[0]] * (1 - wv[:, None, None]) + tex[iv[1]] * wv[:, None, None]
        texel = rows[:, iu[0]] * (1 - wu[None, :, None]) + rows[:, iu[1]] * wu[None, :, None]
    else:
        dx, dy = dx[None, :], dy[:, None]
        (iu, wu) = _taps((dx * np.float32(c) + dy * np.float32(s)) * mirror + centre, level)
        (iv, wv) = _taps((dy * np.float32(c) - dx * np.float32(s)) * k + centre, level)
        wu, wv = wu[..., None], wv[..., None]
        top = flat[iv[0] * stride + iu[0]] * (1 - wu) + flat[iv[0] * stride + iu[1]] * wu
        bottom = flat[iv[1] * stride + iu[0]] * (1 - wu) + flat[iv[1] * stride + iu[1]] * wu
        texel = top * (1 - wv) + bottom * wv  # (h, w, 5)

    region = canvas[y0:y1, x0:x1]
    colour = np.asarray(rgb, dtype=np.float32)
    region *= 1 - texel[..., 4:5]
    region += texel[..., 0:1] * colour + texel[..., 1:4]
