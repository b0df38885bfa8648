"""The toy-world video judge: does a clip show the object and the motion its prompt says?

A compact network trained on toy-world clips with their exact attributes (see
`scripts/train_video_judge.py`). It reads the clip's one object and its motion and
answers three questions, one head each:

    cls      which object is it (the toy world's object names, in order)
    color    what colour is it (the toy world's colour names, in order)
    motion   how does it move (left, right, up, down, bouncing, growing, shrinking, spinning)

Architecture, factorised in space and time: the image judges' 2-D CNN trunk
(`metrics.toy_judge.conv_trunk`) runs on every frame; each frame's final feature map is
flattened through a linear layer (`FrameEmbed`), which keeps where things are, as a
motion's direction needs; residual 1-D convolutions over frames (`TemporalBlock`) turn
positions into movement; a mean over time pools them. Class and colour also read the
trunk's features pooled over time and space. The clip's frame count and frame rate are
free: the judge was trained on 8 frames at 4 fps and 16 frames at 8 fps (both 2 s).

The name lists (and the caption phrases of each motion) live in the judge's config, so
a checkpoint folder is self-describing and this module never imports the toy world.

    judge = VideoJudge.from_pretrained("gen/weights/toy-judge-video")
    cfg = judge.config
    targets = [parse_motion_caption(c, cfg.classes, cfg.colors, cfg.motion_words) for c in prompts]
    report = judge_clips(judge, clips, targets)   # clips (B, 3, T, H, W) in [-1, 1]
    report["object"], report["color"], report["motion"], report["all"]
    judge.features(clips)                         # (B, D): the toy FVD feature space
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from einops import rearrange, reduce
from torch import nn

from metrics.toy_judge import check_vocabularies, conv_trunk, to_native_size
from models.base import ConfiguredModule, register

HEADS = ("cls", "color", "motion")
TARGET_KEYS = ("class", "color", "motion")


@dataclass
class VideoJudgeConfig:
    classes: tuple[str, ...] = ()  # object names, in the order of the `cls` head
    colors: tuple[str, ...] = ()  # colour names, in the order of the `color` head
    motions: tuple[str, ...] = ()  # motion kinds, in the order of the `motion` head
    motion_words: dict[str, str] = field(default_factory=dict)  # caption phrase -> motion kind
    image_size: int = 32  # native side: every frame is resized to it (antialiased)
    channels: tuple[int, ...] = (16, 32, 64, 64)  # per-frame trunk: one stage per entry
    convs_per_stage: int = 2
    frame_dim: int = 96  # per-frame embedding of the flattened final feature map
    temporal_layers: int = 3
    temporal_kernel: int = 3  # frames each temporal convolution sees


def trunk_side(image_size: int, stages: int) -> int:
    """Side of the trunk's final map: stages after the first halve it (3x3, stride 2, pad 1)."""
    side = image_size
    for _ in range(stages - 1):
        side = (side + 1) // 2
    return side


class FrameEmbed(nn.Module):
    """A frame's final feature map (C, s, s) -> one vector (D,); the linear layer keeps position."""

    def __init__(self, cin: int, side: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(cin * side * side, dim)
        self.act = nn.SiLU()

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(rearrange(fmap, "n c h w -> n (c h w)")))  # (N, D)


class TemporalBlock(nn.Module):
    """Pre-norm residual 1-D convolution over frames: x + conv(SiLU(GroupNorm(x)))."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"temporal_kernel must be odd (the clip keeps its length), got {kernel}")
        self.norm = nn.GroupNorm(8 if dim % 8 == 0 else 1, dim)
        self.act = nn.SiLU()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, T)
        return x + self.conv(self.act(self.norm(x)))  # (B, D, T)


def check_clips(clips: torch.Tensor, who: str) -> torch.Tensor:
    """Clips must be float (B, 3, T, H, W) in [-1, 1] with T >= 2."""
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise ValueError(f"{who} wants clips (B, 3, T, H, W) in [-1, 1], got shape {tuple(clips.shape)}")
    if clips.shape[2] < 2:
        raise ValueError(f"{who} needs at least 2 frames to see motion, got T={clips.shape[2]}")
    if not clips.is_floating_point():
        raise ValueError(f"{who} wants float clips in [-1, 1], got {clips.dtype}; convert uint8 with x / 127.5 - 1")
    return clips


@register
class VideoJudge(ConfiguredModule):
    """Per-frame CNN + temporal convolutions -> logits for the clip's object class, colour, motion.

    Input: clips (B, 3, T, H, W) in [-1, 1], any T >= 2 and any H, W (frames resized to `image_size`).
    Output: {"cls": (B, n_classes), "color": (B, n_colors), "motion": (B, n_motions)}.
    """

    config_class = VideoJudgeConfig

    def __init__(self, config: VideoJudgeConfig):
        super().__init__(config)
        cfg = config
        self.classes, self.colors = check_vocabularies(cfg)
        if not cfg.motions:
            raise ValueError("VideoJudgeConfig needs the motion name list (got 0 motions)")
        self.motions = tuple(cfg.motions)
        unknown = sorted({k for k in cfg.motion_words.values() if k not in self.motions})
        if unknown:
            raise ValueError(f"motion_words name kinds {unknown} that are not among motions {self.motions}")
        self.stages = conv_trunk(cfg.channels, cfg.convs_per_stage)
        cin = cfg.channels[-1]
        self.frame_embed = FrameEmbed(cin, trunk_side(cfg.image_size, len(cfg.channels)), cfg.frame_dim)
        self.temporal = nn.Sequential(*[TemporalBlock(cfg.frame_dim, cfg.temporal_kernel)
                                        for _ in range(cfg.temporal_layers)])
        width = cfg.frame_dim + cin  # motion features and time-mean appearance side by side
        self.heads = nn.ModuleDict({
            "cls": nn.Linear(width, len(self.classes)),
            "color": nn.Linear(width, len(self.colors)),
            "motion": nn.Linear(width, len(self.motions)),
        })

    @property
    def feature_dim(self) -> int:
        return self.config.frame_dim + self.config.channels[-1]

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (B, D) the heads read: the toy FVD feature space."""
        b = check_clips(clips, type(self).__name__).shape[0]
        frames = rearrange(clips, "b c t h w -> (b t) c h w")
        frames = to_native_size(frames, self.config.image_size, type(self).__name__)  # (B*T, 3, S, S)
        fmap = self.stages(frames)  # (B*T, C, s, s)
        look = reduce(fmap, "(b t) c h w -> b c", "mean", b=b)  # (B, C) appearance over the clip
        e = rearrange(self.frame_embed(fmap), "(b t) d -> b d t", b=b)  # (B, D, T)
        move = reduce(self.temporal(e), "b d t -> b d", "mean")  # (B, D)
        return torch.cat([move, look], dim=-1)  # (B, D + C)

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(clips)  # (B, D + C)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, clips: torch.Tensor, batch_size: int = 128) -> list[dict]:
        """Named predictions per clip: {"class", "color", "motion", "motion_prob"}."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        rows = []
        try:
            for chunk in clips.split(batch_size):
                out = self(chunk.to(device=device, dtype=torch.float32))
                cls, col = out["cls"].argmax(-1).tolist(), out["color"].argmax(-1).tolist()
                p_motion, motion = torch.softmax(out["motion"].float(), -1).max(-1)
                for c, k, m, p in zip(cls, col, motion.tolist(), p_motion.tolist()):
                    rows.append({"class": self.classes[c], "color": self.colors[k],
                                 "motion": self.motions[m], "motion_prob": p})
        finally:
            self.train(was_training)
        return rows


def judge_clips(judge: VideoJudge, clips: torch.Tensor, targets: Sequence[dict]) -> dict:
    """Score clips against the object, colour and motion their prompts asked for.

    `targets[i]` is a dict {"class", "color", "motion"}; a key that is missing or None
    was not asked and is not scored. Returns

        {"per_clip": [{"prediction": {...}, "correct": {"class": bool | None, "color": ...,
                       "motion": ..., "all": bool}}, ...],
         "object": acc, "color": acc, "motion": acc, "all": acc,
         "n": {"object": count, "color": count, "motion": count, "all": count}}

    where each accuracy is the fraction correct among the clips that asked for that
    attribute (None if none did), and "all" the fraction of clips with every asked
    attribute right.
    """
    if len(clips) != len(targets):
        raise ValueError(f"got {len(clips)} clips but {len(targets)} targets: one target per clip")
    vocab = {"class": judge.classes, "color": judge.colors, "motion": judge.motions}
    for t in targets:
        for key in TARGET_KEYS:
            if t.get(key) is not None and t[key] not in vocab[key]:
                raise ValueError(f"target {key} {t[key]!r} is not one the judge knows: {', '.join(vocab[key])}")
    per_clip = []
    for pred, t in zip(judge.predict(clips), targets):
        correct = {key: None if t.get(key) is None else pred[key] == t[key] for key in TARGET_KEYS}
        correct["all"] = all(v for v in correct.values() if v is not None)
        per_clip.append({"prediction": pred, "correct": correct})

    def accuracy(key):
        scored = [row["correct"][key] for row in per_clip if row["correct"][key] is not None]
        return (sum(scored) / len(scored) if scored else None), len(scored)

    report: dict = {"per_clip": per_clip, "n": {}}
    for name, key in (("object", "class"), ("color", "color"), ("motion", "motion"), ("all", "all")):
        report[name], report["n"][name] = accuracy(key)
    return report


def parse_motion_caption(caption: str, classes: Sequence[str], colors: Sequence[str],
                         motion_words: Mapping[str, str]) -> dict:
    """The targets a toy clip caption asks for.

        "a red ball rolling left"                 -> {"class": "ball", "color": "red", "motion": "left"}
        "a clip of an orange house getting smaller" -> {"class": "house", "color": "orange", "motion": "shrinking"}
        "a big flower hopping"                    -> {"class": "flower", "color": None, "motion": "bouncing"}

    The object is the first object word; its colour a colour word between the article
    before it and it (None when the caption names none). Everything after the object
    word must be one of the phrases in `motion_words` (phrase -> motion kind, e.g. the
    judge config's `motion_words`); anything else raises ValueError.
    """
    words = caption.lower().replace(",", " ").replace(".", " ").split()
    class_set, color_set = set(classes), set(colors)
    where = next((i for i, w in enumerate(words) if w in class_set), None)
    if where is None:
        raise ValueError(f"no object word in caption {caption!r}; known objects: {', '.join(sorted(class_set))}")
    start = where
    while start > 0 and words[start - 1] not in ("a", "an", "of", "the"):
        start -= 1
    color = next((w for w in words[start:where] if w in color_set), None)
    phrase = " ".join(words[where + 1:])
    if phrase not in motion_words:
        known = ", ".join(sorted(motion_words)) or "none (empty motion_words)"
        raise ValueError(f"caption {caption!r} is not a toy clip caption: {phrase!r} after {words[where]!r} "
                         f"is no motion phrase the judge knows; known: {known}")
    return {"class": words[where], "color": color, "motion": motion_words[phrase]}


__all__ = ["VideoJudge", "VideoJudgeConfig", "judge_clips", "parse_motion_caption", "HEADS"]
