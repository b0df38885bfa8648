"""Toy-world scenes: what is where, sampled from a seeded stream.

A `Scene` is pure data: objects with class, colour, size class and placement, an
optional relation, a count, and for clips a `Motion` that moves the objects through
continuous time (seconds), so one clip renders at any frame rate and resolution.
Placement is in canvas units: x right and y down, both in [0, 1] of the canvas width.

Kinds of image scene: one object; a wearer in a hat ("a cat in a hat"); two objects
in a spatial relation (left of, right of, above, below); two or three copies of one
object ("two red balls"). Clips are one object moving (left, right, up, down,
bouncing, growing, shrinking, spinning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from gen.toyworld.raster import placed_box, silhouette
from gen.toyworld.rng import Stream
from gen.toyworld.shapes import COLORS, DRAWINGS, OBJECTS, WEARERS

SIZES = {"small": (0.28, 0.36), "big": (0.46, 0.58)}
BIG_FROM = 0.41  # a scale at or past this is "big"
MARGIN = 0.02  # objects stay this far inside the canvas
GAP = 0.03  # least gap between objects that must not touch
ALIGN = 0.12  # most offset across a relation's axis ("left of" stays level)
CLIP_SECONDS = 2.0  # nominal clip length: motion stays in view for this long

PLAIN_BACKGROUNDS = {"paper": (238, 234, 222), "mist": (222, 228, 236), "sand": (240, 228, 200)}
SKY, GRASS = (176, 214, 245), (120, 196, 96)

RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
MOTIONS = ("left", "right", "up", "down", "bouncing", "growing", "shrinking", "spinning")


@dataclass(frozen=True)
class Obj:
    name: str
    color: str
    cx: float
    cy: float
    scale: float
    angle: float = 0.0
    flip: bool = False

    @property
    def size(self) -> str:
        return "big" if self.scale >= BIG_FROM else "small"

    @property
    def box(self) -> tuple[float, float, float, float]:
        return placed_box(self.name, self.cx, self.cy, self.scale, self.angle, self.flip)


@dataclass(frozen=True)
class Motion:
    """How the objects move: all rates per second, canvas units and radians."""

    kind: str
    velocity: tuple[float, float] = (0.0, 0.0)
    roll: bool = False  # turn as if rolling without slipping
    bounce_height: float = 0.0
    bounce_period: float = 1.0
    growth: float = 0.0  # d log(scale) / dt
    spin: float = 0.0  # d angle / dt, clockwise positive

    def at(self, obj: Obj, t: float) -> Obj:
        vx, vy = self.velocity
        cx, cy = obj.cx + vx * t, obj.cy + vy * t
        angle = obj.angle + self.spin * t
        if self.roll:
            angle += vx * t / (obj.scale / 2 * 0.95)
        if self.bounce_height:
            cy -= self.bounce_height * abs(math.sin(math.pi * t / self.bounce_period))
        return replace(obj, cx=cx, cy=cy, angle=angle, scale=obj.scale * math.exp(self.growth * t))


@dataclass(frozen=True)
class Scene:
    kind: str  # single | wearing | relation | count | motion
    objects: tuple[Obj, ...]
    background: str = "paper"
    horizon: float = 1.0  # grass starts here (1.0: no grass)
    relation: tuple[int, str, int] | None = None
    motion: Motion | None = None
    extra: dict = field(default_factory=dict)

    def at(self, t: float) -> tuple[Obj, ...]:
        if self.motion is None:
            return self.objects
        return tuple(self.motion.at(o, t) for o in self.objects)


# --- sampling ----------------------------------------------------------------------

def _inside(box) -> bool:
    x0, y0, x1, y1 = box
    return x0 >= MARGIN and y0 >= MARGIN and x1 <= 1 - MARGIN and y1 <= 1 - MARGIN


def _apart(a, b) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _union(a, b):
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _place_free(rng: Stream, name: str, scale: float, flip: bool, lo=0.0, hi=1.0):
    """A centre for which the object's box lies inside the canvas (None if too big)."""
    x0, y0, x1, y1 = placed_box(name, 0.0, 0.0, scale, 0.0, flip)
    ax, bx = MARGIN - x0, 1 - MARGIN - x1
    ay, by = max(MARGIN, lo) - y0, min(1 - MARGIN, hi) - y1
    if ax > bx or ay > by:
        return None
    return rng.uniform(ax, bx), rng.uniform(ay, by)


def _new_obj(rng: Stream, name: str, size: str | None = None, color: str | None = None) -> Obj:
    size = size or rng.choice(tuple(SIZES))
    return Obj(
        name=name,
        color=color or rng.choice(tuple(COLORS)),
        cx=0.5,
        cy=0.5,
        scale=rng.uniform(*SIZES[size]),
        flip=DRAWINGS[name].faces_right and rng.chance(0.5),
    )


def _background(rng: Stream) -> tuple[str, float]:
    if rng.chance(0.4):
        return "grass", rng.uniform(0.62, 0.78)
    return rng.choice(tuple(PLAIN_BACKGROUNDS)), 1.0


def _single(rng: Stream) -> Scene:
    obj = _new_obj(rng, rng.choice(OBJECTS))
    cx, cy = _place_free(rng, obj.name, obj.scale, obj.flip)
    return Scene("single", (replace(obj, cx=cx, cy=cy),))


def _hat_for(wearer: Obj, color: str) -> Obj:
    hx, hy, head_width = DRAWINGS[wearer.name].head
    if wearer.flip:
        hx = -hx
    hat_scale = wearer.scale * head_width * 0.58
    return Obj(
        name="hat",
        color=color,
        cx=wearer.cx + wearer.scale / 2 * hx,
        cy=wearer.cy + wearer.scale / 2 * hy - hat_scale / 2 * silhouette("hat").box[3] + 0.05 * wearer.scale,
        scale=hat_scale,
    )


def _wearing(rng: Stream) -> Scene:
    wearer = _new_obj(rng, rng.choice(WEARERS))
    hat_color = rng.choice(tuple(COLORS))
    for _ in range(8):
        # Place the wearer so that wearer and hat together fit.
        both = _union(wearer.box, _hat_for(wearer, hat_color).box)
        ax, bx = MARGIN - both[0] + wearer.cx, 1 - MARGIN - both[2] + wearer.cx
        ay, by = MARGIN - both[1] + wearer.cy, 1 - MARGIN - both[3] + wearer.cy
        if ax <= bx and ay <= by:
            wearer = replace(wearer, cx=rng.uniform(ax, bx), cy=rng.uniform(ay, by))
            return Scene("wearing", (wearer, _hat_for(wearer, hat_color)), relation=(0, "wearing", 1))
        wearer = replace(wearer, scale=wearer.scale * 0.9)
    raise AssertionError("unreachable: a small wearer always fits")


def _centres(extent: float, near: tuple[float, float] = (-1.0, 2.0)) -> tuple[float, float]:
    """Box centres within `near` for which a box of this extent fits in the canvas."""
    return max(MARGIN + extent / 2, near[0]), min(1 - MARGIN - extent / 2, near[1])


def _relation(rng: Stream) -> Scene:
    """Two objects laid out so that `relation` holds: in a row along one axis with a
    gap, their box centres within ALIGN across it."""
    first, second = rng.choice(OBJECTS), rng.choice(OBJECTS)
    while second == first:
        second = rng.choice(OBJECTS)
    relation = rng.choice(RELATIONS)
    a, b = _new_obj(rng, first), _new_obj(rng, second)
    along = 0 if relation in ("left of", "right of") else 1  # 0: x, 1: y
    while True:
        boxes = [placed_box(o.name, 0.0, 0.0, o.scale, 0.0, o.flip) for o in (a, b)]
        lengths = [bx[along + 2] - bx[along] for bx in boxes]
        widths = [bx[3 - along] - bx[1 - along] for bx in boxes]
        slack = 1 - 2 * MARGIN - (GAP + 1e-6) - sum(lengths)
        if slack >= 0:
            break
        if a.scale >= b.scale:  # does not fit: shrink the bigger one
            a = replace(a, scale=a.scale * 0.92)
        else:
            b = replace(b, scale=b.scale * 0.92)
    # Along the axis: [margin, lead][before][gap][after].
    before, after = (0, 1) if relation in ("left of", "above") else (1, 0)
    lead = rng.uniform(0.0, slack)
    gap = GAP + 1e-6 + rng.uniform(0.0, slack - lead)
    start = MARGIN + lead
    mids_along = {before: start + lengths[before] / 2,
                  after: start + lengths[before] + gap + lengths[after] / 2}
    # Across it: centres within ALIGN of each other.
    align = ALIGN - 1e-6
    b_lo, b_hi = _centres(widths[1])
    mid_a = rng.uniform(*_centres(widths[0], (b_lo - align, b_hi + align)))
    mid_b = rng.uniform(*_centres(widths[1], (mid_a - align, mid_a + align)))
    mids_across = {0: mid_a, 1: mid_b}
    placed = []
    for i, obj in enumerate((a, b)):
        bx = boxes[i]
        centre = [0.0, 0.0]
        centre[along] = mids_along[i] - (bx[along] + bx[along + 2]) / 2
        centre[1 - along] = mids_across[i] - (bx[1 - along] + bx[3 - along]) / 2
        placed.append(replace(obj, cx=centre[0], cy=centre[1]))
    a, b = placed
    assert holds(relation, a.box, b.box) and _inside(a.box) and _inside(b.box), (relation, a, b)
    return Scene("relation", (a, b), relation=(0, relation, 1))


def holds(relation: str, a, b) -> bool:
    """Whether box a stands in `relation` to box b (the test every caption obeys)."""
    acx, acy, bcx, bcy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    if relation == "left of":
        return a[2] + GAP <= b[0] and abs(acy - bcy) <= ALIGN
    if relation == "right of":
        return holds("left of", b, a)
    if relation == "above":
        return a[3] + GAP <= b[1] and abs(acx - bcx) <= ALIGN
    if relation == "below":
        return holds("above", b, a)
    raise ValueError(f"unknown relation {relation!r}; known: {', '.join(RELATIONS)}")


# Cells (x0, y0, x1, y1) for counted objects: one object per cell, so none touch.
_HALVES = (((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)), ((0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)))
_QUARTERS = ((0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0))


def _count(rng: Stream) -> Scene:
    """Two or three copies of one object (one class and colour), each in its own cell."""
    n = 2 + rng.below(2)
    template = _new_obj(rng, rng.choice(OBJECTS))
    size = template.size
    if n == 2:
        cells = rng.choice(_HALVES)
    else:
        skip = rng.below(4)
        cells = tuple(c for i, c in enumerate(_QUARTERS) if i != skip)
    placed = []
    for x0, y0, x1, y1 in cells:
        x0, y0 = max(x0 + GAP / 2, MARGIN), max(y0 + GAP / 2, MARGIN)
        x1, y1 = min(x1 - GAP / 2, 1 - MARGIN), min(y1 - GAP / 2, 1 - MARGIN)
        flip = DRAWINGS[template.name].faces_right and rng.chance(0.5)
        bx = placed_box(template.name, 0.0, 0.0, 1.0, 0.0, flip)
        fit = min((x1 - x0) / (bx[2] - bx[0]), (y1 - y0) / (bx[3] - bx[1]))
        lo, hi = SIZES[size]
        if fit < lo:  # a big one does not fit this cell: all become small
            size = "small"
            lo, hi = SIZES[size]
        scale = rng.uniform(min(lo, fit), min(hi, fit))
        cx = rng.uniform(x0 - bx[0] * scale, x1 - bx[2] * scale)
        cy = rng.uniform(y0 - bx[1] * scale, y1 - bx[3] * scale)
        placed.append(replace(template, cx=cx, cy=cy, scale=scale, flip=flip))
    if len({o.size for o in placed}) > 1:  # keep one size class: shrink the big ones
        placed = [replace(o, scale=min(o.scale, SIZES["small"][1])) for o in placed]
    return Scene("count", tuple(placed))


IMAGE_KINDS = {"single": (0.3, _single), "wearing": (0.2, _wearing),
               "relation": (0.3, _relation), "count": (0.2, _count)}


def sample_image_scene(rng: Stream, kind: str | None = None) -> Scene:
    kind = kind or rng.weighted({k: w for k, (w, _) in IMAGE_KINDS.items()})
    scene = IMAGE_KINDS[kind][1](rng)
    background, horizon = _background(rng)
    return replace(scene, background=background, horizon=horizon)


def sample_clip_scene(rng: Stream, motion: str | None = None) -> Scene:
    """One object moving; the motion keeps it in view for CLIP_SECONDS."""
    motion = motion or rng.choice(MOTIONS)
    name = rng.choice(OBJECTS)
    obj = _new_obj(rng, name, size="small" if motion == "growing" else None)
    obj = replace(obj, flip=DRAWINGS[name].faces_right and (motion == "left" or
                                                             (motion not in ("left", "right") and rng.chance(0.5))))
    T = CLIP_SECONDS
    if motion in ("left", "right", "up", "down"):
        x0, y0, x1, y1 = obj.box  # around centre 0.5, 0.5
        span = (x1 - x0) if motion in ("left", "right") else (y1 - y0)
        travel = min(rng.uniform(0.3, 0.45), 1 - 2 * MARGIN - span)
        sign = -1.0 if motion in ("left", "up") else 1.0
        velocity = (sign * travel / T, 0.0) if motion in ("left", "right") else (0.0, sign * travel / T)
        spec = Motion(motion, velocity=velocity, roll=name == "ball" and motion in ("left", "right"))
    elif motion == "bouncing":
        spec = Motion(motion, bounce_height=rng.uniform(0.15, 0.28), bounce_period=rng.uniform(0.6, 1.0))
    elif motion in ("growing", "shrinking"):
        rate = math.log(rng.uniform(1.6, 2.0)) / T
        if motion == "shrinking":
            obj = replace(obj, scale=rng.uniform(*SIZES["big"]))
        spec = Motion(motion, growth=rate if motion == "growing" else -rate)
    else:
        spec = Motion(motion, spin=rng.choice((-1.0, 1.0)) * rng.uniform(math.pi, 2 * math.pi))
    # Place it so its boxes over [0, T] stay inside the canvas.
    probe = [spec.at(replace(obj, cx=0.0, cy=0.0), T * k / 16) for k in range(17)]
    boxes = [o.box for o in probe]
    lo_x, lo_y = min(b[0] for b in boxes), min(b[1] for b in boxes)
    hi_x, hi_y = max(b[2] for b in boxes), max(b[3] for b in boxes)
    cx = rng.uniform(MARGIN - lo_x, 1 - MARGIN - hi_x)
    cy = rng.uniform(MARGIN - lo_y, 1 - MARGIN - hi_y)
    background, horizon = _background(rng)
    return Scene("motion", (replace(obj, cx=cx, cy=cy),), background, horizon, motion=spec)
