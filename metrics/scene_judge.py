"""The toy-world scene judge: every attribute of a toy scene, not just its main object.

A second judge next to `metrics.toy_judge.ImageJudge` (which it does not replace): one
CNN trunk (the same `ConvStage` blocks) and these heads, trained by
`scripts/train_scene_judge.py` on toy renders of every kind:

    count     (B, n_classes, 4)          how many of each class: 0, 1, 2 or 3
    color     (B, n_classes, n_colors)   each class's colour (meaningful where present)
    size      (B, n_classes)             each class's size: logit of "big" (where present)
    relation  (B, 5)                     none / left of / right of / above / below
    wearing   (B,)                       logit: is some object wearing a hat
    presence  (B, n_classes)             logit: is the class in the scene (trains `ClassSlots`)

Colour and size are read per class from that class's slot (`ClassSlots`: attention
over places, bound by a class's own score map), by one colour head and one size head
shared by all classes; count, relation and wearing read the whole scene.

The relation is canonical: that of the object whose class comes first in `classes`
to the other one ("none" for scenes that are not relation scenes; wearing scenes
count as "none" there and set `wearing` instead).

    judge = SceneJudge.from_pretrained("gen/weights/toy-judge-scene")
    judge.predict(images)    # images (B, 3, H, W) in [-1, 1]
    # [{"objects": {"cat": {"count": 1, "color": "red", "size": "big"}, ...},
    #   "relation": "left of", "relation_pair": ("cat", "ball"), "wearing": False}, ...]
    judge.features(images)   # (B, C) pooled trunk features

`scene_labels(attributes, classes, colors)` turns a toy sample's attribute record into
the heads' targets. `metrics` never imports the toy world: the name lists live in the
judge's config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange, reduce
from torch import nn

from metrics.toy_judge import check_vocabularies, conv_trunk, to_native_size
from models.base import ConfiguredModule, register

RELATION_LABELS = ("none", "left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SIZE_LABELS = ("small", "big")
MAX_COUNT = 3
IGNORE = -100  # colour / size target of a class that is absent


@dataclass
class SceneJudgeConfig:
    classes: tuple[str, ...] = ()  # object names, in the order of the per-class heads
    colors: tuple[str, ...] = ()  # colour names, in the order of the colour head
    image_size: int = 32  # native side: inputs are resized to it (antialiased)
    channels: tuple[int, ...] = (32, 64, 128, 128)  # one stage per entry, each halving the side
    convs_per_stage: int = 2
    hidden: int = 384  # width of the shared layer over the flattened final feature map


def canonical_relation(subject_class: str, relation: str, object_class: str,
                       classes: Sequence[str]) -> tuple[str, str, str]:
    """Rewrite (subject, relation, object) so that the subject's class comes first in `classes`."""
    if relation not in INVERSE:
        raise ValueError(f"unknown relation {relation!r}; known: {', '.join(INVERSE)}")
    order = list(classes)
    if order.index(subject_class) <= order.index(object_class):
        return subject_class, relation, object_class
    return object_class, INVERSE[relation], subject_class


def scene_labels(attributes: dict, classes: Sequence[str], colors: Sequence[str]) -> dict:
    """The heads' targets for one toy sample's attribute record.

    Returns {"count": [n_classes] ints 0..3, "color": [n_classes] colour index or IGNORE,
    "size": [n_classes] 0 small / 1 big or IGNORE, "relation": index in RELATION_LABELS,
    "wearing": 0 or 1}. Colour and size are those of the class's objects (the toy world
    gives all copies of a class one colour and one size class); absent classes get IGNORE.
    """
    classes, colors = list(classes), list(colors)
    n = len(classes)
    count, color, size = [0] * n, [IGNORE] * n, [IGNORE] * n
    objects = attributes["objects"]
    for obj in objects:
        c = classes.index(obj["class"])
        count[c] += 1
        if count[c] > MAX_COUNT:
            raise ValueError(f"{count[c]} objects of class {obj['class']!r}: the judge counts up to {MAX_COUNT}")
        col, sz = colors.index(obj["color"]), SIZE_LABELS.index(obj["size"])
        if color[c] not in (IGNORE, col) or size[c] not in (IGNORE, sz):
            raise ValueError(f"objects of class {obj['class']!r} differ in colour or size: one label per class")
        color[c], size[c] = col, sz
    relation, wearing = 0, 0
    for rel in attributes.get("relations", []):
        if rel["relation"] == "wearing":
            wearing = 1
            continue
        subj, obj = objects[rel["subject"]]["class"], objects[rel["object"]]["class"]
        relation = RELATION_LABELS.index(canonical_relation(subj, rel["relation"], obj, classes)[1])
    return {"count": count, "color": color, "size": size, "relation": relation, "wearing": wearing}


class ClassSlots(nn.Module):
    """Per-class features bound by place: where is class k, and what is there?

    A 1x1 convolution scores every place of a feature map for every class; a softmax
    over places turns class k's scores into attention, which pools the map into one
    layer-normalised feature vector per class, its slot (B, K, C). Heads that read slots
    are shared by all classes, so what "red" looks like is learned once, not once per
    class. The smooth maximum of each class's scores, log-mean-exp over places plus a
    bias, is its presence logit: trained to say whether the class is in the scene, it
    teaches the scores to find it.
    """

    def __init__(self, cin: int, n_classes: int):
        super().__init__()
        self.locate = nn.Conv2d(cin, n_classes, 1)
        self.norm = nn.LayerNorm(cin)
        self.presence_bias = nn.Parameter(torch.full((n_classes,), -2.0))  # most classes are absent
        nn.init.zeros_(self.locate.weight)
        nn.init.zeros_(self.locate.bias)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = rearrange(self.locate(fmap), "b k h w -> b k (h w)")  # (B, K, N)
        attention = scores.softmax(-1)  # (B, K, N)
        slots = torch.einsum("bkn,bcn->bkc", attention, rearrange(fmap, "b c h w -> b c (h w)"))  # (B, K, C)
        presence = torch.logsumexp(scores, -1) - math.log(scores.shape[-1]) + self.presence_bias  # (B, K)
        return self.norm(slots), presence


@register
class SceneJudge(ConfiguredModule):
    """CNN over a toy scene -> per-class count, colour, size; the scene's relation and hat.

    Input: images (B, 3, H, W) in [-1, 1], any H and W; resized to `image_size`.
    Output: {"count": (B, K, 4), "color": (B, K, n_colors), "size": (B, K),
             "relation": (B, 5), "wearing": (B,), "presence": (B, K)} with K classes
    ("presence": logit that the class is in the scene, a training aid for `ClassSlots`).

    Scene-level heads (count, relation, wearing) read the flattened final map through a
    shared layer (it keeps where things are) next to the pooled features, both
    layer-normalised so that neither swamps the other. Colour and size read each class's
    slot from the map one stage earlier (twice as fine), through one head for all classes
    (size adds a per-class bias: "big" looks different per drawing).
    """

    config_class = SceneJudgeConfig

    def __init__(self, config: SceneJudgeConfig):
        super().__init__(config)
        cfg = config
        self.classes, self.colors = check_vocabularies(cfg)
        if len(cfg.channels) < 2:
            raise ValueError(f"SceneJudge needs at least 2 trunk stages (slots read the second to last), "
                             f"got channels {list(cfg.channels)}")
        self.stages = conv_trunk(cfg.channels, cfg.convs_per_stage)
        cin = cfg.channels[-1]
        side = cfg.image_size // 2 ** (len(cfg.channels) - 1)
        k, m = len(self.classes), len(self.colors)
        self.shared = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, cfg.hidden), nn.LayerNorm(cfg.hidden),
                                    nn.SiLU())
        self.pool_norm = nn.LayerNorm(cin)
        width = cfg.hidden + cin  # the shared layer and the pooled features side by side
        self.slots = ClassSlots(cfg.channels[-2], k)
        self.heads = nn.ModuleDict({
            "count": nn.Linear(width, k * (MAX_COUNT + 1)),
            "color": nn.Linear(cfg.channels[-2], m),  # per slot, shared by the classes
            "size": nn.Linear(cfg.channels[-2], 1),  # per slot, shared by the classes
            "relation": nn.Linear(width, len(RELATION_LABELS)),
            "wearing": nn.Linear(width, 1),
        })
        self.size_bias = nn.Parameter(torch.zeros(k))

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        return to_native_size(images, self.config.image_size, type(self).__name__)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled trunk features (B, C)."""
        return reduce(self.stages(self.resize(images)), "b c h w -> b c", "mean")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        finer = self.stages[:-1](self.resize(images))  # (B, C', 2s, 2s)
        fmap = self.stages[-1](finer)  # (B, C, s, s)
        scene = torch.cat([self.shared(fmap), self.pool_norm(reduce(fmap, "b c h w -> b c", "mean"))], dim=-1)
        slots, presence = self.slots(finer)  # (B, K, C'), (B, K)
        k = len(self.classes)
        return {
            "count": rearrange(self.heads["count"](scene), "b (k n) -> b k n", k=k),  # (B, K, 4)
            "color": self.heads["color"](slots),  # (B, K, M)
            "size": self.heads["size"](slots).squeeze(-1) + self.size_bias,  # (B, K)
            "relation": self.heads["relation"](scene),  # (B, 5)
            "wearing": self.heads["wearing"](scene).squeeze(-1),  # (B,)
            "presence": presence,  # (B, K)
        }

    @torch.no_grad()
    def predict_indices(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Arg-max predictions as tensors: count (B, K), color (B, K), size (B, K) 0/1,
        relation (B,), wearing (B,) 0/1."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        parts: dict[str, list] = {k: [] for k in ("count", "color", "size", "relation", "wearing")}
        try:
            for chunk in images.split(batch_size):
                out = self(chunk.to(device=device, dtype=torch.float32))
                parts["count"].append(out["count"].argmax(-1))
                parts["color"].append(out["color"].argmax(-1))
                parts["size"].append((out["size"] > 0).long())
                parts["relation"].append(out["relation"].argmax(-1))
                parts["wearing"].append((out["wearing"] > 0).long())
        finally:
            self.train(was_training)
        return {k: torch.cat(v).cpu() for k, v in parts.items()}

    def predict(self, images: torch.Tensor, batch_size: int = 256) -> list[dict]:
        """Named predictions per image:

            {"objects": {class: {"count", "color", "size"}} for the classes seen (count > 0),
             "relation": one of RELATION_LABELS, "relation_pair": (first, second) classes the
             relation reads "first <relation> second" for (None when "none" or unclear),
             "wearing": bool}
        """
        p = self.predict_indices(images, batch_size)
        rows = []
        for i in range(len(p["relation"])):
            objects = {}
            for c, name in enumerate(self.classes):
                n = int(p["count"][i, c])
                if n:
                    objects[name] = {"count": n, "color": self.colors[int(p["color"][i, c])],
                                     "size": SIZE_LABELS[int(p["size"][i, c])]}
            relation = RELATION_LABELS[int(p["relation"][i])]
            present = [name for name in self.classes if name in objects]  # in class order
            pair = (present[0], present[1]) if relation != "none" and len(present) == 2 else None
            rows.append({"objects": objects, "relation": relation, "relation_pair": pair,
                         "wearing": bool(p["wearing"][i])})
        return rows


def stack_labels(rows: Sequence[dict]) -> dict[str, torch.Tensor]:
    """`scene_labels` dicts -> int64 tensors: count/color/size (N, K), relation/wearing (N,)."""
    return {k: torch.tensor([r[k] for r in rows], dtype=torch.int64)
            for k in ("count", "color", "size", "relation", "wearing")}


def scene_accuracy(judge: SceneJudge, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy per head against stacked `scene_labels` targets (tensors, one row per image):

        count     all classes' counts exact, per image
        color     per (image, present class)
        size      per (image, present class)
        relation  per image
        wearing   per image
        all       every head right on the image
    """
    p = judge.predict_indices(images)
    present = labels["color"] != IGNORE  # (B, K)
    count_ok = (p["count"] == labels["count"]).all(-1)
    color_ok = (p["color"] == labels["color"]) | ~present
    size_ok = (p["size"] == labels["size"]) | ~present
    rel_ok, wear_ok = p["relation"] == labels["relation"], p["wearing"] == labels["wearing"]
    n_present = int(present.sum())
    return {
        "count": float(count_ok.float().mean()),
        "color": float(((p["color"] == labels["color"]) & present).sum()) / max(n_present, 1),
        "size": float(((p["size"] == labels["size"]) & present).sum()) / max(n_present, 1),
        "relation": float(rel_ok.float().mean()),
        "wearing": float(wear_ok.float().mean()),
        "all": float((count_ok & color_ok.all(-1) & size_ok.all(-1) & rel_ok & wear_ok).float().mean()),
    }


SIZE_WORDS = ("small", "big")
NEXT_TO = "next to"  # a side-by-side phrase: left of or right of


def _noun_phrase(words: Sequence[str], classes, colors, plurals) -> dict | None:
    """{"class", "color", "size", "plural"} of words ending in an object noun, or None."""
    if not words:
        return None
    noun = words[-1]
    cls = noun if noun in classes else plurals.get(noun)
    if cls is None:
        return None
    before = words[:-1]
    return {"class": cls, "color": next((w for w in before if w in colors), None),
            "size": next((w for w in before if w in SIZE_WORDS), None), "plural": noun not in classes}


def parse_scene_caption(caption: str, classes: Sequence[str], colors: Sequence[str],
                        plurals: Mapping[str, str], relation_words: Mapping[str, str]) -> dict:
    """The targets a relation or count caption of the toy grammar asks for.

        "a small gray ball left of a yellow hat"
            -> {"kind": "relation", "subject": {"class": "ball", "color": "gray", "size": "small"},
                "relation": "left of", "object": {"class": "hat", "color": "yellow", "size": None}}
        "three big gray trees" -> {"kind": "count", "class": "tree", "count": 3, "color": "gray", "size": "big"}

    `plurals` maps plural nouns to classes, `relation_words` phrases to a relation (or
    "next to" for either side); the caller takes both from the grammar (`metrics` never
    imports the toy world). Other captions raise ValueError.
    """
    classes, colors = set(classes), set(colors)
    words = caption.lower().replace(",", " ").replace(".", " ").split()
    numbers = {"two": 2, "three": 3}
    for i, w in enumerate(words):
        if w in numbers:
            phrase = _noun_phrase(words[i + 1:], classes, colors, plurals)
            if phrase is None:  # ("fish" is its own plural)
                break
            return {"kind": "count", "class": phrase["class"], "count": numbers[w], "color": phrase["color"],
                    "size": phrase["size"]}
    text = " ".join(words)
    for words_ in sorted(relation_words, key=len, reverse=True):  # "to the left of" before "left of"
        left, sep, right = text.partition(f" {words_} ")
        if not sep:
            continue
        subject = _noun_phrase(left.split(), classes, colors, plurals)
        other = _noun_phrase([w for w in right.split() if w not in ("a", "an", "the")], classes, colors, plurals)
        if subject and other and not subject["plural"] and not other["plural"]:
            drop = lambda d: {k: d[k] for k in ("class", "color", "size")}  # noqa: E731
            return {"kind": "relation", "subject": drop(subject), "relation": relation_words[words_],
                    "object": drop(other)}
    raise ValueError(f"caption {caption!r} is not a relation or count caption of the toy grammar")


def judge_scenes(judge: "SceneJudge", images: torch.Tensor, targets: Sequence[dict]) -> dict:
    """Score images against relation / count targets (`parse_scene_caption`), GenEval-style:
    an image is right when every attribute its prompt names is right.

    count: the named class appears exactly that many times (and in the named colour and
    size); relation: both named objects are there in their named colours and sizes, and
    the predicted relation between them is the one asked ("next to": left or right).
    Returns {"per_image": [...], "count": acc, "relation": acc, "all": acc, "n": {...}}.
    """
    if len(images) != len(targets):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets: one target per image")
    predictions = judge.predict(images)
    per_image = []

    def looks(obj: dict, seen: dict) -> bool:
        return (obj.get("color") in (None, seen["color"])) and (obj.get("size") in (None, seen["size"]))

    for pred, t in zip(predictions, targets):
        objects = pred["objects"]
        if t["kind"] == "count":
            seen = objects.get(t["class"])
            ok = seen is not None and seen["count"] == t["count"] and looks(t, seen)
        else:
            a, b = t["subject"], t["object"]
            ok = a["class"] != b["class"] and all(o["class"] in objects and objects[o["class"]]["count"] == 1
                                                  and looks(o, objects[o["class"]]) for o in (a, b))
            if ok:
                wanted = ("left of", "right of") if t["relation"] == NEXT_TO else (t["relation"],)
                relation, pair = pred["relation"], pred["relation_pair"]
                ok = pair is not None and any(
                    canonical_relation(a["class"], r, b["class"], judge.classes) == (pair[0], relation, pair[1])
                    for r in wanted)
        per_image.append({"prediction": pred, "correct": {"count": ok if t["kind"] == "count" else None,
                                                          "relation": ok if t["kind"] == "relation" else None,
                                                          "all": ok}})

    def accuracy(key):
        scored = [row["correct"][key] for row in per_image if row["correct"][key] is not None]
        return (sum(scored) / len(scored) if scored else None), len(scored)

    report: dict = {"per_image": per_image, "n": {}}
    for key in ("count", "relation", "all"):
        report[key], report["n"][key] = accuracy(key)
    return report


__all__ = ["SceneJudge", "ClassSlots", "scene_accuracy", "stack_labels", "SceneJudgeConfig", "scene_labels",
           "parse_scene_caption", "judge_scenes", "canonical_relation", "RELATION_LABELS", "SIZE_LABELS", "MAX_COUNT", "IGNORE"]
