"""Training configuration: one dataclass, from CLI flags and/or a YAML / TOML file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from gen.errors import GenError


SAMPLE_PROMPTS = {
    "image": ("a cat in a hat", "a red ball left of a blue house", "two yellow stars", "a green bird"),
    "video": ("a red ball rolling left", "a blue car moving right", "a green star spinning", "a yellow cat bouncing"),
}


@dataclass
class TrainConfig:
    """Everything a run needs; saved as `config.json` in the run folder."""

    out: str = ""
    kind: str = "image"  # image | video | vae
    data: str = "toy"
    data_n: int | None = None  # toy datasets: how many distinct samples (None: the default)
    data_kind: str | None = None  # toy images: only this kind of scene (single, wearing, relation, count)
    size: int = 32
    frames: int = 16
    fps: float = 8.0
    channels: int = 3
    model: str = "dit-tiny"
    model_overrides: dict = field(default_factory=dict)
    text_encoder: dict = field(default_factory=lambda: {"arch": "tiny", "hash_vocab": 4096})
    train_text_encoder: bool = True
    vae: str | None = None  # latent diffusion: a VAE folder or shipped name
    cache_latents: bool = False  # encode each training image once and keep its latents
    vae_config: dict = field(default_factory=dict)  # kind "vae": ImageVAEConfig fields (factor, ...)
    init: str | None = None  # vae: start from this VAE's weights; video: from this image or video pipeline
    freeze_spatial: bool = False  # video with init: train only the temporal layers (a motion module)
    image_ratio: float = 0.0  # video: share of steps on a batch of images, as one-frame clips (joint training)
    image_data: str | None = None  # video with image_ratio: the image dataset (default: toy for toy-video)
    vae_video: bool = False  # kind "vae": a causal video VAE on clips (models.VideoVAE)
    kl_weight: float = 1e-6  # kind "vae": weight of the KL term
    lpips_weight: float = 0.1  # kind "vae": LPIPS term, used when its AlexNet weights are present
    recon_loss: str = "l1"  # kind "vae": l1 | l2
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
    ema_decay: float = 0.999
    cond_drop: float = 0.1
    bf16: bool = True
    seed: int = 0
    max_minutes: float | None = None  # stop early (checkpoint + export) after this wall time
    workers: int = 0
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    sample_prompts: tuple[str, ...] | None = None  # None: SAMPLE_PROMPTS[kind]
    sample_steps: int = 25
    sample_cfg: float = 3.0

    def validate(self) -> "TrainConfig":
        positive = {"steps": self.steps, "batch": self.batch, "size": self.size, "frames": self.frames}
        for name, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise GenError(f"--{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise GenError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise GenError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.cond_drop < 1:
            raise GenError(f"--cond-drop must be in [0, 1), got {self.cond_drop}")
        if self.kind not in ("image", "video", "vae"):
            raise GenError(f"training kind must be image, video or vae, got {self.kind!r}")
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
        if self.freeze_spatial and not (self.kind == "video" and self.init):
            raise GenError("--freeze-spatial needs `gen train video --init IMAGE_PIPELINE`: "
                           "the spatial layers it keeps come from that image model")
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
        unknown = sorted(set(data) - names)
        if unknown:
            raise GenError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        data = dict(data)
        if data.get("sample_prompts") is not None:
            data["sample_prompts"] = tuple(data["sample_prompts"])
        return cls(**data)


def read_config_file(path: str | Path) -> dict:
    """A YAML or TOML file of TrainConfig fields (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise GenError(f"--config {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise GenError("reading a YAML config needs PyYAML: pip install pyyaml") from None
        data = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise GenError(f"--config must be a .yaml, .yml, .toml or .json file, got {path}")
    return {k.replace("-", "_"): v for k, v in data.items()}
