"""Text-to-image pipeline: text encoder + denoiser + noise schedule (+ VAE), one folder.

    from gen.pipeline import Pipeline
    pipe = Pipeline.from_pretrained("default")      # shipped, or a local folder
    images = pipe("a cat in a hat", seed=0)         # list of PIL images

A pipeline folder holds `model_index.json` (which parts, the schedule, the sampling
defaults) and one checkpoint folder per part, in the spirit of diffusers'
`model_index.json`.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen.errors import GenError

INDEX = "model_index.json"
WEIGHTS_DIR = Path(__file__).parent / "weights"
SAMPLERS = ("ddim", "ddpm", "dpm++2m", "heun")
NULL_CONDITIONINGS = ("learned", "empty_prompt")


DEFAULT_VAE, DEFAULT_VIDEO_VAE = "toy-vae", "toy-video-vae"


def resolve_vae(model: str, video: bool = False) -> Path:
    """The VAE checkpoint folder `model` names: "default" (the shipped one), a shipped name, a
    folder (config.json + model.safetensors), or a pipeline folder's vae part."""
    if model == "default":
        name = DEFAULT_VIDEO_VAE if video else DEFAULT_VAE
        path = WEIGHTS_DIR / name
        if not (path / "config.json").is_file():
            raise GenError(f"the shipped {'video ' if video else ''}VAE {path} is not installed; pass --model PATH "
                           f"to a VAE checkpoint folder (config.json + model.safetensors)")
        return path
    for path in (Path(model), WEIGHTS_DIR / model):
        if (path / INDEX).is_file():  # a pipeline folder: its vae part
            part = json.loads((path / INDEX).read_text()).get("vae")
            if not part:
                raise GenError(f"--model {model}: the pipeline in {path} has no VAE (a pixel-space model)")
            return path / part
        if (path / "config.json").is_file():
            return path
    shipped = sorted(p.name for p in WEIGHTS_DIR.glob("*") if "vae" in p.name and (p / "config.json").is_file())
    raise GenError(f"unknown VAE {model!r}: not a shipped VAE ({', '.join(shipped) or 'none shipped yet'}) "
                   f"and not a folder holding config.json + model.safetensors")


def shipped_models() -> dict[str, Path]:
    """Name -> folder of every pipeline shipped inside the package (plus "default")."""
    found = {p.name: p for p in sorted(WEIGHTS_DIR.glob("*")) if (p / INDEX).is_file()}
    alias = WEIGHTS_DIR / "DEFAULT"
    if alias.is_file() and alias.read_text().strip() in found:
        found["default"] = found[alias.read_text().strip()]
    return found


@dataclass
class SamplingDefaults:
    sampler: str = "ddim"
    steps: int = 30
    cfg: float = 3.0
    spacing: str = "trailing"
    size: int = 32
    clip_x0: float | None = 1.0


class Pipeline:
    """Text encoder + denoiser + noise schedule (+ VAE): prompts in, images out.

    `vae`: None for a pixel-space denoiser; otherwise the denoiser works on latents and
    the VAE is any object with `decode(latents) -> pixels in [-1, 1]`, `scale_factor`
    (pixels per latent along each side) and `latent_channels`.
    `null_conditioning`: the unconditional half of classifier-free guidance.
    "learned": cond["null"] flags the rows whose text the denoiser swaps for its learned
    null embedding (gen's own models). "empty_prompt": the text encoder's embedding of ""
    (diffusers' convention, for models trained with captions dropped to "").
    """

    kind = "image"

    def __init__(self, denoiser, text_encoder, schedule, defaults: SamplingDefaults | None = None,
                 vae=None, name: str = "", null_conditioning: str = "learned"):
        if null_conditioning not in NULL_CONDITIONINGS:
            raise GenError(f"null_conditioning must be one of {', '.join(NULL_CONDITIONINGS)}, "
                           f"got {null_conditioning!r}")
        if null_conditioning == "empty_prompt" and text_encoder is None:
            raise GenError('null_conditioning="empty_prompt" needs a text encoder to embed ""')
        self.denoiser, self.text_encoder, self.schedule, self.vae = denoiser, text_encoder, schedule, vae
        self.defaults = defaults or SamplingDefaults()
        self.name = name
        self.null_conditioning = null_conditioning
        self.denoiser.eval()
        if self.text_encoder is not None:
            self.text_encoder.eval()
        if isinstance(self.vae, torch.nn.Module):
            self.vae.eval()

    # --- files ------------------------------------------------------------------------

    def save_pretrained(self, path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write the folder; a new one is assembled beside and swapped in whole. `dtype`
        stores the weights at that precision (torch.float16 halves a shipped model)."""
        from dataclasses import asdict

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise GenError(f"{path} exists and is not empty; choose a new folder or pass overwrite=True")
        if path.exists() and any(path.iterdir()) and not (path / INDEX).is_file():
            raise GenError(f"{path} is not a pipeline folder (no {INDEX}); refusing to replace it")
        tmp = path.with_name(f".{path.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.denoiser.save_pretrained(tmp / "denoiser", dtype=dtype)
            if self.text_encoder is not None:
                self.text_encoder.save_pretrained(tmp / "text_encoder", dtype=dtype)
            if self.vae is not None:
                self.vae.save_pretrained(tmp / "vae", dtype=dtype)
            index = {"_class": "Pipeline", "kind": self.kind, "denoiser": "denoiser",
                     "text_encoder": "text_encoder" if self.text_encoder is not None else None,
                     "vae": "vae" if self.vae is not None else None, "schedule": self.schedule.to_dict(),
                     "defaults": asdict(self.defaults)}
            (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def from_pretrained(cls, name_or_path: str = "default", device="cpu", dtype: torch.dtype | None = None):
        """A shipped name, a gen pipeline folder, or a diffusers Stable-Diffusion folder or hub
        id (run with gen's samplers: gen/diffusers_pipeline.py)."""
        import models
        from samplers import NoiseSchedule

        from gen import diffusers_pipeline

        shipped = shipped_models()
        path = shipped.get(name_or_path) or Path(name_or_path)
        if not (path / INDEX).is_file():
            if diffusers_pipeline.is_hub_id(str(name_or_path)):
                return diffusers_pipeline.DiffusersPipeline.from_pretrained(str(name_or_path), device, dtype)
            names = ", ".join(sorted(shipped)) or "none yet"
            raise GenError(f"unknown model {name_or_path!r}: not a shipped name ({names}) "
                           f"and not a folder with {INDEX}")
        try:
            index = json.loads((path / INDEX).read_text())
        except json.JSONDecodeError as err:
            raise GenError(f"{path / INDEX} is corrupt: {err}") from None
        if diffusers_pipeline.is_diffusers_index(index):
            return diffusers_pipeline.DiffusersPipeline.from_pretrained(path, device, dtype)

        def part(sub):
            folder = path / sub
            for file in ("config.json", "model.safetensors"):
                if not (folder / file).is_file():
                    raise GenError(f"model folder {path} is missing {folder / file}")
            try:
                return models.load_pretrained(folder, device=device)
            except Exception as err:  # corrupt weights or config
                raise GenError(f"cannot load {folder}: {err}") from None

        denoiser = part(index["denoiser"])
        text_encoder = part(index["text_encoder"]) if index.get("text_encoder") else None
        vae = part(index["vae"]) if index.get("vae") else None
        if dtype is not None:
            denoiser.to(dtype)
            if text_encoder is not None:
                text_encoder.to(dtype)
        defaults = SamplingDefaults(**index.get("defaults", {}))
        return cls(denoiser, text_encoder, NoiseSchedule.from_dict(index["schedule"]), defaults,
                   vae=vae, name=str(name_or_path))

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    # --- generation ------------------------------------------------------------------

    def encode_prompt(self, prompts: list[str]) -> dict:
        """Text conditioning for a batch of prompts; over-long prompts are cut, with a warning."""
        enc = self.text_encoder
        tokens = enc.tokenize(prompts)
        for p, row in zip(prompts, tokens):
            if row[-1] != 0 and len(enc.tokenizer.encode(p)) + 2 > enc.context_length:
                warnings.warn(f"prompt longer than the text encoder's {enc.context_length} tokens; "
                              f"truncated: {p!r}", stacklevel=3)
        with torch.no_grad():
            return enc(tokens.to(self.device))

    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None, sampler: str | None = None,
                 cfg: float | None = None, negative: str | None = None, size: int | None = None,
                 callback=None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1]; image i starts from noise seeded by seeds[i]."""
        from samplers import CFG, sample

        d = self.defaults
        steps = d.steps if steps is None else steps
        sampler = sampler or d.sampler
        cfg = d.cfg if cfg is None else cfg
        size = size or d.size
        T = self.schedule.num_train_timesteps
        if not (isinstance(steps, int) and 1 <= steps <= T):
            raise GenError(f"--steps must be between 1 and {T} (the model was trained on {T} timesteps), got {steps}")
        if not 0 <= cfg <= 50:
            raise GenError(f"--cfg must be between 0 and 50 (1 = no guidance), got {cfg}")
        if sampler not in SAMPLERS and not sampler.startswith("diffusers:"):
            raise GenError(f"--sampler must be one of {', '.join(SAMPLERS)} or diffusers:<SchedulerClass>, "
                           f"got {sampler!r}")
        shape = self.latent_shape(size)
        x_T = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        x_T = x_T.to(self.device)
        batch = len(prompts)
        unconditional = all(not p.strip() for p in prompts)
        cond = self.encode_prompt(prompts) if self.text_encoder is not None else {}
        learned = self.null_conditioning == "learned"
        if learned:
            cond["null"] = torch.tensor([not p.strip() for p in prompts], device=self.device)
        guidance = None
        if not unconditional and cfg != 1.0:
            if negative:
                null_cond = self.encode_prompt([negative])
                if learned:
                    null_cond["null"] = torch.zeros(1, dtype=torch.bool, device=self.device)
            elif learned:
                null_cond = {"null": torch.ones(1, dtype=torch.bool, device=self.device)}
            else:
                null_cond = self.encode_prompt([""])
            guidance = CFG(cfg, null_cond)
        dtype = next(self.denoiser.parameters()).dtype

        def denoise(x, t, c):
            return self.denoiser(x.to(dtype), t, c).float()

        with torch.no_grad():
            x0 = sample(denoise, x_T, self.schedule, method=sampler, steps=steps,
                        spacing=None if sampler.startswith("diffusers:") else d.spacing,
                        clip_x0=d.clip_x0, cond=cond, guidance=guidance, callback=callback)
        assert x0.shape[0] == batch
        return self.decode(x0).clamp(-1, 1)

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        """(C, h, w) of one x_T for a size x size image: the pixels, or the VAE's latents."""
        if self.vae is None:
            return (self.denoiser.config.in_channels, size, size)
        f = self.vae.scale_factor
        if size % f:
            raise GenError(f"size must be a multiple of {f} (the VAE's downsampling factor), got {size}")
        return (self.vae.latent_channels, size // f, size // f)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """The sampler's x_0 as pixels: VAE-decoded latents, or x_0 itself without a VAE."""
        if self.vae is None:
            return x0
        with torch.no_grad():
            return self.vae.decode(x0).float()

    def __call__(self, prompt: str | list[str], n: int = 1, seed: int = 0, **kwargs) -> list:
        """PIL images for `prompt` (n of each); image k of a prompt uses seed + k."""
        from PIL import Image

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(n)]
        seeds = [seed + k for _ in range(len(prompts) // n) for k in range(n)]
        images = self.generate(prompts, seeds, **kwargs)
        return [Image.fromarray(a) for a in to_uint8(images)]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C) (grayscale repeated to RGB)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1).numpy()
