"""The toy-world image judge: does a picture show what its prompt says?

A compact CNN trained on toy-world renders with their exact attributes (see
`scripts/train_toy_judge.py`). It reads the scene's main object and answers four
questions, one head each:

    cls        which object is it (the toy world's object names, in order)
    color      what colour is it (the toy world's colour names, in order)
    hat        is it wearing a hat (one logit)
    hat_color  what colour is the hat (meaningful only when there is one)

The name lists live in the judge's config, so a checkpoint folder is self-describing
and this module never imports the toy world (`metrics` does not import `gen`).

    judge = ImageJudge.from_pretrained("gen/weights/toy-judge-image")
    targets = [parse_caption(c, judge.config.classes, judge.config.colors) for c in prompts]
    report = judge_prompts(judge, images, targets)   # images (B, 3, H, W) in [-1, 1]
    report["object"], report["color"], report["hat"], report["all"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from models.base import ConfiguredModule, register

HEADS = ("cls", "color", "hat", "hat_color")
WEARING_WORDS = ("in", "wearing", "with")
HAT_WORD = "hat"


@dataclass
class ImageJudgeConfig:
    classes: tuple[str, ...] = ()  # object names, in the order of the `cls` head
    colors: tuple[str, ...] = ()  # colour names, in the order of the `color`/`hat_color` heads
    image_size: int = 32  # native side: inputs are resized to it (antialiased)
    channels: tuple[int, ...] = (32, 64, 128, 128)  # one stage per entry, each halving the side
    convs_per_stage: int = 2


class ConvStage(nn.Module):
    """`n` 3x3 conv-BN-SiLU layers; the first one strides 2 (except for the first stage)."""

    def __init__(self, cin: int, cout: int, n: int, downsample: bool):
        super().__init__()
        layers = []
        for i in range(n):
            stride = 2 if downsample and i == 0 else 1
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, stride, 1, bias=False),
                       nn.BatchNorm2d(cout), nn.SiLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


def check_vocabularies(cfg) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (classes, colours) name lists of a judge config, which must not be empty."""
    if not cfg.classes or not cfg.colors:
        raise ValueError(f"{type(cfg).__name__} needs the class and colour name lists "
                         f"(got {len(cfg.classes)} classes, {len(cfg.colors)} colours)")
    return tuple(cfg.classes), tuple(cfg.colors)


def conv_trunk(channels, convs_per_stage: int) -> nn.Sequential:
    """The judges' CNN trunk: one ConvStage per width, halving the side after the first."""
    stages, cin = [], 3
    for i, cout in enumerate(channels):
        stages.append(ConvStage(cin, cout, convs_per_stage, downsample=i > 0))
        cin = cout
    return nn.Sequential(*stages)


def to_native_size(images: torch.Tensor, side: int, who: str) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> (B, 3, side, side) (antialiased bilinear)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{who} wants images (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{who} wants float images in [-1, 1], got {images.dtype}; "
                         "convert uint8 with x / 127.5 - 1")
    if images.shape[-2:] != (side, side):
        images = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return images


@register
class ImageJudge(ConfiguredModule):
    """CNN over a toy scene -> logits for the main object's class, colour, hat, hat colour.

    Input: images (B, 3, H, W) in [-1, 1], any H and W; resized to `image_size`.
    Output: {"cls": (B, n_classes), "color": (B, n_colors), "hat": (B,), "hat_color": (B, n_colors)}.
    """

    config_class = ImageJudgeConfig

    def __init__(self, config: ImageJudgeConfig):
        super().__init__(config)
        cfg = config
        self.classes, self.colors = check_vocabularies(cfg)
        self.stages = conv_trunk(cfg.channels, cfg.convs_per_stage)
        cin = cfg.channels[-1]
        self.heads = nn.ModuleDict({
            "cls": nn.Linear(cin, len(self.classes)),
            "color": nn.Linear(cin, len(self.colors)),
            "hat": nn.Linear(cin, 1),
            "hat_color": nn.Linear(cin, len(self.colors)),
        })

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        return to_native_size(images, self.config.image_size, type(self).__name__)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (B, C) the heads read: the toy FID/KID space."""
        h = self.stages(self.resize(images))  # (B, C, S / 2^(stages-1), same)
        return reduce(h, "b c h w -> b c", "mean")  # (B, C)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)  # (B, C)
        out = {name: head(h) for name, head in self.heads.items()}
        out["hat"] = out["hat"].squeeze(-1)  # (B,)
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> list[dict]:
        """Named predictions per image: {"class", "color", "hat", "hat_color", "hat_prob"}."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        rows = []
        try:
            for chunk in images.split(batch_size):
                out = self(chunk.to(device=device, dtype=torch.float32))
                cls, col = out["cls"].argmax(-1).tolist(), out["color"].argmax(-1).tolist()
                hat_p, hat_col = torch.sigmoid(out["hat"]).tolist(), out["hat_color"].argmax(-1).tolist()
                for c, k, p, hc in zip(cls, col, hat_p, hat_col):
                    rows.append({"class": self.classes[c], "color": self.colors[k], "hat": p > 0.5,
                                 "hat_color": self.colors[hc], "hat_prob": p})
        finally:
            self.train(was_training)
        return rows


def judge_prompts(judge: ImageJudge, images: torch.Tensor, targets: Sequence[dict]) -> dict:
    """Score images against the attributes their prompts asked for.

    `targets[i]` is a dict {"class", "color", "hat", "hat_color"}; a key that is missing
    or None was not asked and is not scored (a hat colour is scored only where a hat
    was asked for). Returns

        {"per_image": [{"prediction": {...}, "correct": {"class": bool, "color": bool | None,
                        "hat": bool | None, "hat_color": bool | None, "all": bool}}, ...],
         "object": acc, "color": acc, "hat": acc, "hat_color": acc, "all": acc,
         "n": {"object": count, "color": count, ...}}

    where each accuracy is the fraction correct among the images that asked for that
    attribute (None if none did), and "all" the fraction of images with every asked
    attribute right.
    """
    if len(images) != len(targets):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets: one target per image")
    for t in targets:
        for key in ("class", "color", "hat_color"):
            vocab = judge.classes if key == "class" else judge.colors
            if t.get(key) is not None and t[key] not in vocab:
                raise ValueError(f"target {key} {t[key]!r} is not one the judge knows: {', '.join(vocab)}")
    predictions = judge.predict(images)
    per_image = []
    for pred, t in zip(predictions, targets):
        want_hat = t.get("hat")
        correct = {
            "class": None if t.get("class") is None else pred["class"] == t["class"],
            "color": None if t.get("color") is None else pred["color"] == t["color"],
            "hat": None if want_hat is None else pred["hat"] == bool(want_hat),
            "hat_color": (pred["hat_color"] == t["hat_color"]
                          if want_hat and t.get("hat_color") is not None else None),
        }
        asked = [v for v in correct.values() if v is not None]
        correct["all"] = all(asked)
        per_image.append({"prediction": pred, "correct": correct})

    def accuracy(key):
        scored = [row["correct"][key] for row in per_image if row["correct"][key] is not None]
        return (sum(scored) / len(scored) if scored else None), len(scored)

    report: dict = {"per_image": per_image, "n": {}}
    for name, key in (("object", "class"), ("color", "color"), ("hat", "hat"),
                      ("hat_color", "hat_color"), ("all", "all")):
        report[name], report["n"][name] = accuracy(key)
    return report


def parse_caption(caption: str, classes: Sequence[str], colors: Sequence[str]) -> dict:
    """The targets a single-object or wearing caption of the toy grammar asks for.

        "a picture of a small red cat in a blue hat"
            -> {"class": "cat", "color": "red", "hat": True, "hat_color": "blue"}
        "a green bird" -> {"class": "bird", "color": "green", "hat": False, "hat_color": None}

    The main object is the first object word; its colour is a colour word between the
    article before it and it. "in" / "wearing" / "with" + a noun phrase ending in "hat"
    after it mark a hat (with the colour named in that phrase, if any). Captions of
    other scenes (relations, counts) raise ValueError.
    """
    words = caption.lower().replace(",", " ").replace(".", " ").split()
    classes, colors = set(classes), set(colors)
    where = next((i for i, w in enumerate(words) if w in classes), None)
    if where is None:
        raise ValueError(f"no object word in caption {caption!r}; known objects: {', '.join(sorted(classes))}")
    start = where
    while start > 0 and words[start - 1] not in ("a", "an", "of", "the"):
        start -= 1
    color = next((w for w in words[start:where] if w in colors), None)
    rest = words[where + 1:]
    target = {"class": words[where], "color": color, "hat": False, "hat_color": None}
    if not rest:
        return target
    if len(rest) >= 2 and rest[0] in WEARING_WORDS and rest[-1] == HAT_WORD \
            and not any(w in classes for w in rest[1:-1]):
        target["hat"] = True
        target["hat_color"] = next((w for w in rest[1:-1] if w in colors), None)
        return target
    raise ValueError(f"caption {caption!r} is not a single-object or wearing caption: "
                     f"cannot read {' '.join(rest)!r} after {words[where]!r}")


__all__ = ["ImageJudge", "ImageJudgeConfig", "judge_prompts", "parse_caption", "HEADS"]
