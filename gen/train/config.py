"""Training configuration: one dataclass, from CLI flags and/or a YAML / TOML file."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from gen.errors import GenError, reading


SAMPLE_PROMPTS = {
    "image": ("a cat in a hat", "a red ball left of a blue house", "two yellow stars", "a green bird"),
    "video": ("a red ball rolling left", "a blue car moving right", "a green star spinning", "a yellow cat bouncing"),
}


@dataclass
class TrainConfig:
    """Everything a run needs; saved as `config.json` in the run folder."""

    out: str = ""
    kind: str = "image"  # image | video | vae | sr
    data: str = "toy"
    data_n: int | None = None  # toy datasets: how many distinct samples (None: the default)
    data_kind: str | None = None  # toy images: only this kind of scene (single, wearing, relation, count)
    data_split: str | None = None  # folders / datasets with splits: which one (default train)
    caption_column: str | None = None  # metadata / datasets column of the captions (default text)
    download: bool = False  # a hub dataset id not in the local cache may be fetched (network)
    size: int = 32
    frames: int | None = None  # video: 16; a video VAE: 17 (it takes 1 + k * 2 frames)
    fps: float = 8.0
    channels: int = 3
    model: str | None = None  # a preset (`gen models`); None: dit-tiny, or sr-unet-s for kind "sr"
    model_overrides: dict = field(default_factory=dict)
    text_encoder: dict = field(default_factory=lambda: {"arch": "tiny", "hash_vocab": 4096})
    train_text_encoder: bool = True
    text_encoder_from: str | None = None  # image/video: a new denoiser on this pipeline's text encoder, frozen
    vae: str | None = None  # latent diffusion: a VAE folder or shipped name
    cache_latents: bool = False  # encode each training image once and keep its latents
    vae_config: dict = field(default_factory=dict)  # kind "vae": ImageVAEConfig fields (factor, ...)
    init: str | None = None  # vae: start from this VAE's weights; video: from this image or video pipeline;
    # image: the pipeline to fine-tune (every weight, or with lora_rank adapters on its denoiser)
    lora_rank: int | None = None  # image: train LoRA adapters of this rank on --init's denoiser, nothing else
    lora_alpha: float | None = None  # the adapters' alpha (scale alpha / rank; default: the rank)
    freeze_spatial: bool = False  # video with init: train only the temporal layers (a motion module)
    frame_masks: tuple[str, ...] = ()  # video: a masked-frame model (frames + frame_mask inputs) trained on these
    # kinds of known frames, one drawn per clip (animate, interpolate, extend, none; gen.pipeline.FRAME_MASKS)
    known_noise: float = 0.0  # video with frame_masks: known frames get Gaussian noise of std U(0, this)
    dense_interpolate: bool = False  # video with frame_masks: interpolate-mask clips at twice fps (the rate
    # temporal super-resolution gives), the other kinds at fps
    image_ratio: float = 0.0  # video: share of steps on a batch of images, as one-frame clips (joint training)
    image_data: str | None = None  # video with image_ratio: the image dataset (default: toy for toy-video)
    vae_video: bool = False  # kind "vae": a causal video VAE on clips (models.VideoVAE)
    kl_weight: float = 1e-6  # kind "vae": weight of the KL term
    lpips_weight: float = 0.1  # kind "vae": LPIPS term, used when its AlexNet weights are present
    recon_loss: str = "l1"  # kind "vae": l1 | l2
    scale: int = 4  # kind "sr": high-res side / low-res side
    crop: int | None = None  # kind "sr": train on random crops of this side (high-res pixels)
    sr_noise: float = 0.2  # kind "sr": the stage's default augmentation level at sampling, in [0, 1]
    sr_aug_max: float = 1.0  # kind "sr": training augmentation levels are drawn uniformly from [0, sr_aug_max]
    sr_regression: bool = False  # kind "sr": SR3's baseline, the image predicted in one pass (MSE), no diffusion
    schedule: dict = field(default_factory=lambda: {"beta_schedule": "cosine", "prediction": "v"})
    loss_weighting: str = "min_snr"  # uniform | min_snr
    min_snr_gamma: float = 5.0
    steps: int = 1000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 100
    lr_schedule: str = "constant"  # constant | cosine
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    accumulate: int = 1  # gradient accumulation: each step is this many micro-batches of batch / accumulate
    ema_decay: float = 0.999
    cond_drop: float = 0.1
    bf16: bool = True
    compile: bool = False  # torch.compile the denoiser (inductor), its caches in RUN/compile-cache
    threads: int | None = None  # torch intra-op threads (None: torch's default, one per core)
    seed: int = 0
    max_minutes: float | None = None  # stop early (checkpoint + export) after this wall time
    workers: int = 0
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 500
    snapshot_every: int = 0  # steps between EMA exports kept in RUN/snapshots/step-N (a learning curve's points)
    keep_checkpoints: int = 2
    sample_prompts: tuple[str, ...] | None = None  # None: SAMPLE_PROMPTS[kind]
    sample_steps: int = 25
    sample_cfg: float = 3.0

    def __post_init__(self):
        if self.model is None:
            self.model = "sr-unet-s" if self.kind == "sr" else "dit-tiny"
        if self.frames is None:
            self.frames = 17 if self.kind == "vae" and self.vae_video else 16

    def validate(self) -> "TrainConfig":
        """Every value's type and range, every choice against its owner's table: a wrong one
        is refused naming the flag, never trained with silently."""
        from gen.runtime import MAX_FRAMES, MAX_SIDE
        from samplers import LOSS_WEIGHTINGS

        _check_types(self)
        ranges = {  # flag: (value, low, high); None: open
            "steps": (self.steps, 1, 10**9), "batch": (self.batch, 1, 65536), "size": (self.size, 1, MAX_SIDE),
            "frames": (self.frames, 1, MAX_FRAMES), "warmup": (self.warmup, 0, None), "workers": (self.workers, 0, 64),
            "log-every": (self.log_every, 1, None), "sample-every": (self.sample_every, 0, None),
            "ckpt-every": (self.ckpt_every, 0, None), "snapshot-every": (self.snapshot_every, 0, None),
            "keep-checkpoints": (self.keep_checkpoints, 1, None),
            "sample-steps": (self.sample_steps, 1, 1000), "channels": (self.channels, 1, 4),
            "accumulate": (self.accumulate, 1, 65536),
        }
        if self.threads is not None:
            ranges["threads"] = (self.threads, 1, 1024)
        if self.kind == "sr":
            ranges["scale"] = (self.scale, 2, 16)
            if self.crop is not None:
                ranges["crop"] = (self.crop, self.scale, MAX_SIDE)
        if self.data_n is not None:
            ranges["n"] = (self.data_n, 1, 10**9)
        for name, (value, low, high) in ranges.items():
            if value < low:
                span = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"at least {low}")
                raise GenError(f"--{name} must be {span}, got {value!r}")
            if high is not None and value > high:
                raise GenError(f"--{name} must be at most {high}, got {value!r}")
        for name, value in (("lr", self.lr), ("fps", self.fps), ("grad-clip", self.grad_clip),
                            ("min-snr-gamma", self.min_snr_gamma)):
            if not (math.isfinite(value) and value > 0):
                raise GenError(f"--{name} must be a positive number, got {value}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise GenError(f"--max-minutes must be a positive number, got {self.max_minutes}")
        for name, value in (("kl-weight", self.kl_weight), ("weight-decay", self.weight_decay),
                            ("lpips-weight", self.lpips_weight), ("sample-cfg", self.sample_cfg)):
            if not (math.isfinite(value) and value >= 0):
                raise GenError(f"--{name} must be a non-negative number, got {value}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise GenError(f"--weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {self.loss_weighting!r}")
        if self.data_kind is not None:
            from gen.toyworld import IMAGE_KINDS

            if self.data_kind not in IMAGE_KINDS:
                raise GenError(f"data_kind must be one of {', '.join(IMAGE_KINDS)}, got {self.data_kind!r}")
        if self.kind != "vae":
            import models

            if self.model not in models.PRESETS and not (self.kind in ("image", "video") and self.init):
                raise GenError(f"unknown model preset {self.model!r}; known: {', '.join(models.PRESETS)} "
                               "(see `gen models`)")
        if not 0 <= self.ema_decay < 1:
            raise GenError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.cond_drop < 1:
            raise GenError(f"--cond-drop must be in [0, 1), got {self.cond_drop}")
        if self.kind not in ("image", "video", "vae", "sr"):
            raise GenError(f"training kind must be image, video, vae or sr, got {self.kind!r}")
        if not 0 <= self.sr_noise <= 1:
            raise GenError(f"--sr-noise must be between 0 and 1 (a fraction of the noise schedule), "
                           f"got {self.sr_noise}")
        if not 0 <= self.sr_aug_max <= 1:
            raise GenError(f"--sr-aug-max must be between 0 and 1 (a fraction of the noise schedule), "
                           f"got {self.sr_aug_max}")
        if self.recon_loss not in ("l1", "l2"):
            raise GenError(f"--recon-loss must be l1 or l2, got {self.recon_loss!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise GenError(f"--lr-schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not 0 <= self.image_ratio <= 1:
            raise GenError(f"--image-ratio must be between 0 and 1, got {self.image_ratio}")
        if self.image_ratio and self.kind != "video":
            raise GenError("--image-ratio is for `gen train video` (joint image-video training)")
        if self.image_ratio and not self.image_data and self.data != "toy-video":
            raise GenError(f"--image-ratio with --data {self.data}: name the images with --image-data")
        if self.frame_masks:
            from gen.pipeline.video import FRAME_MASKS

            bad = [k for k in self.frame_masks if k not in FRAME_MASKS]
            if self.kind != "video" or bad:
                raise GenError(f"--frame-masks trains a masked-frame video model on kinds from "
                               f"{', '.join(FRAME_MASKS)}: gen train video --frame-masks animate,interpolate; "
                               f"got {','.join(self.frame_masks)!r} for {self.kind}")
        if self.dense_interpolate and ("interpolate" not in self.frame_masks or self.vae):
            raise GenError("--dense-interpolate draws the interpolate-mask clips of a pixel-space masked-frame model "
                           "at twice --fps: give --frame-masks with interpolate, and no --vae")
        if self.text_encoder_from and (self.kind not in ("image", "video") or self.init):
            raise GenError("--text-encoder-from gives a new image or video denoiser a trained text encoder; "
                           "with --init the text encoder comes from that pipeline already")
        if self.frame_masks and self.freeze_spatial and self.weight_decay:
            raise GenError(f"--weight-decay {self.weight_decay} would change the frozen image layers of a "
                           f"masked-frame model trained with --freeze-spatial; use --weight-decay 0")
        if not (math.isfinite(self.known_noise) and 0 <= self.known_noise <= 1) \
                or (self.known_noise and not self.frame_masks):
            raise GenError(f"--known-noise must be between 0 and 1, given with --frame-masks; got {self.known_noise}")
        if self.freeze_spatial and not (self.kind == "video" and self.init):
            raise GenError("--freeze-spatial needs `gen train video --init IMAGE_PIPELINE`: "
                           "the spatial layers it keeps come from that image model")
        if self.lora_rank is not None:
            if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 1:
                raise GenError(f"--lora-rank must be a positive integer, got {self.lora_rank!r}")
            if self.kind != "image" or not self.init:
                raise GenError("--lora-rank fine-tunes a text-to-image pipeline: "
                               "gen train image --init PIPELINE (e.g. default) --lora-rank R")
        if self.lora_alpha is not None and (self.lora_rank is None or not self.lora_alpha > 0):
            raise GenError(f"--lora-alpha must be a positive number, given with --lora-rank; got {self.lora_alpha}")
        if not self.out:
            raise GenError("--out is required: the run folder to create")
        return self

    @property
    def prompts(self) -> tuple[str, ...]:
        """The fixed prompts of the sample grids."""
        return tuple(self.sample_prompts) if self.sample_prompts else SAMPLE_PROMPTS.get(self.kind, ())

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict):
            raise GenError(f"training options must be a table of name = value, got {type(data).__name__}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise GenError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        data = dict(data)
        for name in ("sample_prompts", "frame_masks"):
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        return cls(**data)


def _check_types(cfg: TrainConfig) -> None:
    """Each field holds its annotated type (a config file can say anything)."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints[f.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        ok = False
        for kind in allowed:
            kind = typing.get_origin(kind) or kind
            if kind is type(None):
                ok |= value is None
            elif kind is float:
                ok |= isinstance(value, (int, float)) and not isinstance(value, bool)
            elif kind is int:
                ok |= isinstance(value, int) and not isinstance(value, bool)
            elif kind is tuple:
                ok |= isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            else:
                ok |= isinstance(value, kind)
        if not ok:
            names = " or ".join("null" if k is type(None) else getattr(typing.get_origin(k) or k, "__name__", str(k))
                                for k in allowed)
            raise GenError(f"training option {f.name} must be {names}, got {value!r}")


# How a run executes, not what it records: a resumed run takes these from its caller.
RUNTIME = ("steps", "max_minutes", "workers", "compile", "threads", "download")
# On --resume, options that may change between runs (they do not alter what is trained
# at a given step); any other option given with a value unlike the run's is refused.
RESUMABLE = ("steps", "max_minutes", "log_every", "sample_every", "ckpt_every", "snapshot_every", "keep_checkpoints",
             "workers",
             "sample_prompts", "sample_steps", "sample_cfg", "out", "compile", "threads", "download")


# Fields whose command-line flag is not --field-name.
FLAG_NAMES = {"loss_weighting": "--weighting", "data_n": "--n", "data_split": "--split", "vae_video": "--video",
              "bf16": "--no-bf16", "sr_regression": "--regression", "kind": "the training kind",
              "schedule": "--prediction (schedule)"}


def flag_name(field_name: str) -> str:
    return FLAG_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def resume_config(saved: dict, given: dict) -> TrainConfig:
    """The config of a resumed run: the run's own, with the `given` options that may change
    applied; a given option that would change what is trained is a GenError naming it."""
    run = TrainConfig.from_dict(saved)
    changed = []
    for name, value in given.items():
        if name in RESUMABLE or name not in saved:
            continue
        have = saved[name]
        if isinstance(have, list):
            have = tuple(have)
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(have, dict) and isinstance(value, dict):
            value = {**have, **value}
        if value != have:
            changed.append(f"{flag_name(name)} {value!r} (the run has {have!r})")
    if changed:
        raise GenError(f"--resume continues the run as it was configured, but {'; '.join(changed)}: drop the "
                       f"flag, or start a new run with --out to change it (--steps, --max-minutes and the "
                       f"logging/checkpoint intervals may change on resume)")
    return TrainConfig.from_dict({**run.to_dict(), **{k: v for k, v in given.items() if k in RESUMABLE}})


def read_config_file(path: str | Path) -> dict:
    """A YAML or TOML file of TrainConfig fields (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise GenError(f"--config {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise GenError(f"--config must be a .yaml, .yml, .toml or .json file, got {path}")
    with reading(path, "--config"):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise GenError("reading a YAML config needs PyYAML: pip install pyyaml") from None
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    if not isinstance(data, dict):
        raise GenError(f"--config {path} must hold a table of option = value, got a {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
