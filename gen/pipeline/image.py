"""Text-to-image pipeline: text encoder + denoiser + noise schedule (+ VAE), one folder.

    from gen.pipeline import Pipeline
    pipe = Pipeline.from_pretrained("default")      # shipped, or a local folder
    images = pipe("a cat in a hat", seed=0)         # list of PIL images
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen.errors import GenError, reading
from gen.pipeline.folder import (FORMAT, INDEX, _load_difference, _same_weights, _save_difference, base_digest,
                                 check_base, write_folder)
from gen.pipeline.weights import shipped_models

SAMPLERS = ("ddim", "ddpm", "dpm++2m", "heun")
NULL_CONDITIONINGS = ("learned", "empty_prompt")
MAX_SCALE = 4  # generation may go up to this multiple of the trained size and frame count


@dataclass
class SamplingDefaults:
    sampler: str = "ddim"
    steps: int = 30
    cfg: float = 3.0
    spacing: str = "trailing"
    size: int = 32
    clip_x0: float | None = 1.0
    frames: int | None = None  # video pipelines: the trained frame count
    fps: float | None = None  # video pipelines: the frame rate it was trained at
    scale: int | None = None  # super-resolution stages: output side / input side
    sr_noise: float | None = None  # super-resolution stages: the input's augmentation level in [0, 1]


class Pipeline:
    """Text encoder + denoiser + noise schedule (+ VAE): prompts in, images out.

    `vae`: None for a pixel-space denoiser; otherwise the denoiser works on latents and
    the VAE is any object with `decode(latents) -> pixels in [-1, 1]`, `scale_factor`
    (pixels per latent along each side), `latent_channels`, `image_channels` and, for
    image-to-image, `encode(pixels) -> latents`.
    `null_conditioning`: the unconditional half of classifier-free guidance.
    "learned": cond["null"] flags the rows whose text the denoiser swaps for its learned
    null embedding (gen's own models). "empty_prompt": the text encoder's embedding of ""
    (diffusers' convention, for models trained with captions dropped to "").
    """

    kind = "image"
    precision = "auto"  # sampling compute: "auto", "bf16" (autocast) or "fp32"; see gen.runtime.compute_precision

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

    def save_pretrained(self, path, overwrite: bool = False, dtype: torch.dtype | None = None,
                        base: str | None = None, rank: int | None = None) -> Path:
        """Write the folder; a new one is assembled beside and swapped in whole. `dtype`
        stores the weights at that precision (torch.float16 halves a shipped model).

        `base` (a shipped pipeline name) stores only what differs from that pipeline: a
        text encoder equal to the base's is not written, and the denoiser keeps only the
        tensors that are not bit-equal to the base denoiser's same-named ones (a video
        model trained on a frozen image model stores its temporal layers: a motion module,
        as in AnimateDiff). Loading reads the base first. `rank` (with `base`): a denoiser matrix
        whose difference from the base's has at most that rank (a merged LoRA fine-tune) is
        stored as that difference's two factors.
        """
        from dataclasses import asdict

        path = Path(path)
        base_pipe = None
        if base is not None:
            if base not in shipped_models():
                raise GenError(f"base {base!r} is not a shipped pipeline ({', '.join(sorted(shipped_models()))})")
            base_pipe = Pipeline.from_pretrained(base)
        def fill(tmp: Path) -> None:
            index = {"_class": type(self).__name__, "format": FORMAT, "kind": self.kind, "denoiser": "denoiser",
                     "text_encoder": "text_encoder" if self.text_encoder is not None else None,
                     "vae": "vae" if self.vae is not None else None, "schedule": self.schedule.to_dict(),
                     "defaults": asdict(self.defaults)}
            if base_pipe is None:
                self.denoiser.save_pretrained(tmp / "denoiser", dtype=dtype)
            else:
                index["base"], index["base_sha256"] = base, base_digest(shipped_models()[base])
                _save_difference(self.denoiser, base_pipe.denoiser, tmp / "denoiser", dtype, rank)
            if self.text_encoder is not None:
                if base_pipe is not None and _same_weights(self.text_encoder, base_pipe.text_encoder, dtype):
                    index["text_encoder"] = "base"
                else:
                    self.text_encoder.save_pretrained(tmp / "text_encoder", dtype=dtype)
            if self.vae is not None:
                self.vae.save_pretrained(tmp / "vae", dtype=dtype)
            (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")

        return write_folder(path, overwrite, fill)

    @classmethod
    def from_pretrained(cls, name_or_path: str = "default", device="cpu", dtype: torch.dtype | None = None,
                        local_files_only: bool = True):
        """A shipped name, a gen pipeline folder, or a diffusers Stable-Diffusion folder or hub
        id (run with gen's samplers: gen/pipeline/diffusers.py), of this class's kind; see
        `gen.pipeline.load`. A hub id is read from the Hugging Face cache; only
        `local_files_only=False` (`--download`) lets it be fetched."""
        from gen.pipeline import load

        return load(name_or_path, kind=cls.kind, device=device, dtype=dtype, local_files_only=local_files_only)

    @classmethod
    def from_folder(cls, path: Path, index: dict, device="cpu", dtype: torch.dtype | None = None, name: str = ""):
        """Build from a gen pipeline folder whose model_index.json (`index`) is already read."""
        import models
        from samplers import NoiseSchedule

        shipped = shipped_models(cls.kind)
        base = None
        if index.get("base"):
            if index["base"] not in shipped:
                raise GenError(f"{path} builds on the shipped pipeline {index['base']!r}, which is not installed")
            check_base(path, index, shipped[index["base"]])
            base = Pipeline.from_pretrained(index["base"], device=device)

        def part(sub):
            folder = path / sub
            needed = ("config.json",) if base is not None and sub == index["denoiser"] else ("config.json",
                                                                                             "model.safetensors")
            for file in needed:
                if not (folder / file).is_file():
                    raise GenError(f"model folder {path} is missing {folder / file}")
            try:
                if base is not None and sub == index["denoiser"]:
                    return _load_difference(folder, base.denoiser, device)
                return models.load_pretrained(folder, device=device)
            except Exception as err:  # corrupt weights or config
                raise GenError(f"cannot load {folder}: {err}") from None

        denoiser = part(index["denoiser"])
        if index.get("text_encoder") == "base":
            text_encoder = base.text_encoder
        else:
            text_encoder = part(index["text_encoder"]) if index.get("text_encoder") else None
        vae = part(index["vae"]) if index.get("vae") else None
        if dtype is not None:
            denoiser.to(dtype)
            if text_encoder is not None:
                text_encoder.to(dtype)
        with reading(path / INDEX, fix="its schedule or sampling defaults are not ones gen writes"):
            defaults = SamplingDefaults(**index.get("defaults", {}))
            schedule = NoiseSchedule.from_dict(index["schedule"])
        return cls(denoiser, text_encoder, schedule, defaults, vae=vae, name=name or str(path))

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def image_channels(self) -> int:
        """Channels of the pictures drawn: the denoiser's, or the VAE's pixels'."""
        return self.denoiser.config.in_channels if self.vae is None else self.vae.image_channels

    @property
    def compute_precision(self) -> str:
        """What `precision` resolves to on this pipeline's device: "bf16" or "fp32"."""
        from gen.runtime import compute_precision

        return compute_precision(self.precision, self.device)

    def autocast(self):
        """The context the denoiser runs in while sampling (bf16 autocast, or none)."""
        from gen.runtime import autocast

        return autocast(self.precision, self.device)

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
                 callback=None, init: torch.Tensor | None = None, strength: float | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1]; image i starts from noise seeded by seeds[i].

        `init` (image-to-image, SDEdit: Meng et al. 2022): pixels (B or 1, C, H, W) in [-1, 1]
        at the output size, noised to the level `strength` in [0, 1] reaches (default 0.8;
        1 with a mask) and denoised from there: only the last round(steps * strength) of the
        sampler's steps run, so strength 0 returns `init` and 1 draws anew. `mask` (inpainting):
        (B or 1, 1, H, W), 1 where the picture is redrawn, 0 where `init` is kept; the kept
        region is held at its clean value in every step's x_0 (the samplers' `known`) and is
        `init`'s exactly in the result.
        """
        size = size or self.defaults.size
        edit = check_edit(init, strength, mask, len(prompts), self.image_channels, size)
        x_T = self.noise(seeds, self.latent_shape(size))
        if edit is None:
            return self.decode(self.denoise(prompts, x_T, steps, sampler, cfg, negative, callback)).clamp(-1, 1)
        init, strength, mask = edit
        init, mask = init.to(self.device), None if mask is None else mask.to(self.device)
        steps, sampler, cfg = self.check_sampling(steps, sampler, cfg)
        from samplers import make_timesteps, q_sample

        timesteps = make_timesteps(self.schedule.num_train_timesteps, steps, self.defaults.spacing, self.schedule)
        timesteps = timesteps[len(timesteps) - round(steps * strength):]
        if timesteps:
            z0 = self.encode(init).expand_as(x_T)
            t = torch.full((len(prompts),), timesteps[0], dtype=torch.long, device=self.device)
            known = None
            if mask is not None:
                keep = 1 - torch.nn.functional.interpolate(mask, size=x_T.shape[-2:], mode="area").round()
                known = (z0, keep)
            x0 = self.denoise(prompts, q_sample(z0, t, x_T, self.schedule), sampler=sampler, cfg=cfg,
                              negative=negative, callback=callback, timesteps=timesteps, known=known)
            out = self.decode(x0).clamp(-1, 1)
        else:  # strength too small for one step: nothing is redrawn
            out = init.expand(len(prompts), *init.shape[1:])
        return out if mask is None else torch.lerp(init, out, mask)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] as the denoiser's x_0: the VAE's (mean) latents, or the pixels themselves."""
        if self.vae is None:
            return images.float()
        with torch.no_grad():
            return self.vae.encode(images.to(self.device)).float()

    def noise(self, seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
        """x_T: one standard normal sample of `shape` per seed (drawn on the CPU: the same on any device)."""
        x_T = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return x_T.to(self.device)

    def check_sampling(self, steps: int | None, sampler: str | None, cfg: float | None) -> tuple[int, str, float]:
        """(steps, sampler, cfg) with the model's defaults filled in, each checked."""
        d = self.defaults
        steps = d.steps if steps is None else steps
        sampler = sampler or d.sampler
        cfg = d.cfg if cfg is None else cfg
        T = self.schedule.num_train_timesteps
        if not (isinstance(steps, int) and 1 <= steps <= T):
            raise GenError(f"--steps must be between 1 and {T} (the model was trained on {T} timesteps), got {steps}")
        if not 0 <= cfg <= 50:
            raise GenError(f"--cfg must be between 0 and 50 (1 = no guidance), got {cfg}")
        if sampler not in SAMPLERS and not sampler.startswith("diffusers:"):
            raise GenError(f"--sampler must be one of {', '.join(SAMPLERS)} or diffusers:<SchedulerClass>, "
                           f"got {sampler!r}")
        return steps, sampler, cfg

    def denoise(self, prompts: list[str], x_T: torch.Tensor, steps: int | None = None, sampler: str | None = None,
                cfg: float | None = None, negative: str | None = None, callback=None, timesteps=None,
                known=None, extra: dict | None = None, inner: dict | None = None) -> torch.Tensor:
        """Run the sampler from x_T with text guidance; returns x_0 (pixels or latents).
        `timesteps` (the sampler's, from the first; replaces `steps`) and `known` go to `samplers.sample`;
        `extra` holds more cond entries (a masked-frame model's known frames), the same in both CFG halves;
        `inner`: samplers.CFG's inner_scale / inner_null / inner_from, guidance on those entries too."""
        from samplers import CFG, sample

        steps, sampler, cfg = self.check_sampling(steps, sampler, cfg)
        d = self.defaults
        batch = len(prompts)
        unconditional = all(not p.strip() for p in prompts)
        cond = self.encode_prompt(prompts) if self.text_encoder is not None else {}
        cond.update(extra or {})
        learned = self.null_conditioning == "learned"
        if learned:
            cond["null"] = torch.tensor([not p.strip() for p in prompts], device=self.device)
        guidance = None
        inner = inner or {}
        if not unconditional and (cfg != 1.0 or inner):
            if negative:
                null_cond = self.encode_prompt([negative])
                if learned:
                    null_cond["null"] = torch.zeros(1, dtype=torch.bool, device=self.device)
            elif learned:
                null_cond = {"null": torch.ones(1, dtype=torch.bool, device=self.device)}
            else:
                null_cond = self.encode_prompt([""])
            guidance = CFG(cfg, null_cond, **inner)
        dtype = next(self.denoiser.parameters()).dtype

        def model(x, t, c):
            return self.denoiser(x.to(dtype), t, c).float()

        with torch.no_grad(), self.autocast():
            spaced = {"steps": steps, "spacing": d.spacing} if timesteps is None else {"timesteps": timesteps}
            x0 = sample(model, x_T, self.schedule, method=sampler, **spaced, clip_x0=d.clip_x0, cond=cond,
                        guidance=guidance, callback=callback, known=known)
        assert x0.shape[0] == batch
        return x0

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        """(C, h, w) of one x_T for a size x size image: the pixels, or the VAE's latents."""
        trained = self.defaults.size
        if not (isinstance(size, int) and 1 <= size <= MAX_SCALE * trained):
            raise GenError(f"--size must be between 1 and {MAX_SCALE * trained} ({MAX_SCALE}x the {trained} pixels "
                           f"the model was trained at: past that it draws no coherent picture, and attention "
                           f"memory grows with the fourth power of the side), got {size}")
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



def edit_strength(strength: float | None, inpainting: bool) -> float:
    """The strength an edit runs at: the one given, else 0.8 (1 when inpainting), as diffusers'."""
    return strength if strength is not None else 1.0 if inpainting else 0.8


def check_edit(init, strength, mask, batch: int, channels: int, size: int):
    """None (text to image), or (init, strength, mask) checked: init (B or 1, C, size, size)
    in [-1, 1], strength in [0, 1] (default 0.8, or 1 with a mask), mask (B or 1, 1, size, size)
    of 0 and 1 (rounded), or None."""
    if init is None:
        if strength is not None or mask is not None:
            raise GenError("--strength and --mask edit an image: give it with --init-image")
        return None
    strength = edit_strength(strength, mask is not None)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise GenError(f"--strength must be between 0 (keep the image) and 1 (draw anew), got {strength!r}")
    for name, value, c in (("init image", init, channels), ("mask", mask, 1)):
        if value is None:
            continue
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] not in (1, batch) \
                or tuple(value.shape[1:]) != (c, size, size):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise GenError(f"the {name} must be a tensor (1 or {batch}, {c}, {size}, {size}) at the output size, "
                           f"got {got}; resize it first")
    init = init.float().clamp(-1, 1)
    mask = None if mask is None else mask.float().clamp(0, 1).round()
    return init, float(strength), mask


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C) (grayscale repeated to RGB)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1).numpy()
