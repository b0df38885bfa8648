"""Captions from a small grammar, every one true of its scene.

The grammar draws its paraphrases from the same seeded stream as the scene, so a
sample's caption is as fixed as its pixels. Colour and size words are optional
(a caption may leave them out, never state them wrongly); relations may be said
from either side ("a ball left of a house" = "a house right of a ball"); "next to"
stands for either horizontal relation.
"""

from __future__ import annotations

from gen.toyworld.rng import Stream
from gen.toyworld.scene import INVERSE, Obj, Scene
from gen.toyworld.shapes import DRAWINGS

PREFIXES = ("", "", "", "a picture of ", "a photo of ", "an image of ", "a drawing of ")
CLIP_PREFIXES = ("", "", "", "a video of ", "a clip of ", "an animation of ")
NUMBERS = {2: "two", 3: "three"}
RELATION_WORDS = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
SIDE_BY_SIDE = ("next to", "beside")
WEARING_WORDS = ("in", "wearing", "with")

_MOVES = {"bird": "flying", "fish": "swimming", "car": "driving", "ball": "rolling"}


def motion_phrases(kind: str, name: str) -> tuple[str, ...]:
    """Ways to say a motion of object `name`."""
    if kind in ("left", "right"):
        verb = _MOVES.get(name, "moving")
        return (f"{verb} {kind}", f"{verb} to the {kind}", f"moving {kind}", f"going {kind}")
    if kind in ("up", "down"):
        verb = "flying" if name == "bird" else "moving"
        return (f"{verb} {kind}", f"going {kind}")
    return {
        "bouncing": ("bouncing", "bouncing up and down", "hopping"),
        "growing": ("growing", "getting bigger"),
        "shrinking": ("shrinking", "getting smaller"),
        "spinning": ("spinning", "turning around", "rotating"),
    }[kind]


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def describe(obj: Obj, rng: Stream, size: bool = True, plural: int = 1) -> str:
    """A noun phrase for `obj`: optional size, optional colour, the class name."""
    words = []
    if size and rng.chance(0.35):
        words.append(obj.size)
    if rng.chance(0.8):
        words.append(obj.color)
    drawing = DRAWINGS[obj.name]
    words.append(drawing.plural if plural > 1 else drawing.name)
    phrase = " ".join(words)
    return f"{NUMBERS[plural]} {phrase}" if plural > 1 else _article(phrase)


def _with_prefix(prefix: str, phrase: str) -> str:
    return prefix + phrase if prefix else phrase


def caption(scene: Scene, rng: Stream) -> str:
    """A caption true of `scene`, drawn from the grammar."""
    objs = scene.objects
    if scene.kind == "motion":
        obj = objs[0]
        still_size = scene.motion.kind not in ("growing", "shrinking")
        phrase = f"{describe(obj, rng, size=still_size)} {rng.choice(motion_phrases(scene.motion.kind, obj.name))}"
        return _with_prefix(rng.choice(CLIP_PREFIXES), phrase)
    if scene.kind == "single":
        phrase = describe(objs[0], rng)
    elif scene.kind == "wearing":
        phrase = f"{describe(objs[0], rng)} {rng.choice(WEARING_WORDS)} {describe(objs[1], rng, size=False)}"
    elif scene.kind == "relation":
        subject, relation, other = scene.relation
        if rng.chance(0.5):  # say it from the other side
            subject, relation, other = other, INVERSE[relation], subject
        if relation in ("left of", "right of") and rng.chance(0.3):
            words = rng.choice(SIDE_BY_SIDE)
        else:
            words = rng.choice(RELATION_WORDS[relation])
        phrase = f"{describe(objs[subject], rng)} {words} {describe(objs[other], rng)}"
    elif scene.kind == "count":
        sizes = {o.size for o in objs}
        phrase = describe(objs[0], rng, size=len(sizes) == 1, plural=len(objs))
    else:
        raise ValueError(f"unknown scene kind {scene.kind!r}")
    return _with_prefix(rng.choice(PREFIXES), phrase)
