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

from gen.errors import GenError, read_json, reading

INDEX = "model_index.json"
WEIGHTS_DIR = Path(__file__).parent / "weights"
SAMPLERS = ("ddim", "ddpm", "dpm++2m", "heun")
NULL_CONDITIONINGS = ("learned", "empty_prompt")
MAX_SCALE = 4  # generation may go up to this multiple of the trained size and frame count


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
            part = _read_index(path).get("vae")
            if not part:
                raise GenError(f"--model {model}: the pipeline in {path} has no VAE (a pixel-space model)")
            return path / part
        if (path / "config.json").is_file():
            return path
    shipped = sorted(p.name for p in WEIGHTS_DIR.glob("*") if "vae" in p.name and (p / "config.json").is_file())
    raise GenError(f"unknown VAE {model!r}: not a shipped VAE ({', '.join(shipped) or 'none shipped yet'}) "
                   f"and not a folder holding config.json + model.safetensors")


DEFAULT_FILES = {"image": "DEFAULT", "video": "DEFAULT_VIDEO", "sr": "DEFAULT_SR"}  # the shipped default, per kind


def shipped_models(kind: str = "image") -> dict[str, Path]:
    """Name -> folder of every pipeline shipped inside the package, plus "default": the
    shipped default of that `kind` (image, video or sr), where one is shipped."""
    found = {p.name: p for p in sorted(WEIGHTS_DIR.glob("*")) if (p / INDEX).is_file()}
    alias = WEIGHTS_DIR / DEFAULT_FILES[kind]
    if alias.is_file() and alias.read_text().strip() in found:
        found["default"] = found[alias.read_text().strip()]
    return found


def _read_index(path: Path) -> dict:
    """A pipeline folder's model_index.json, checked to be a table with the parts it names."""
    index = read_json(path / INDEX, fix="rewrite it with save_pretrained, or restore the folder")
    if not isinstance(index, dict):
        raise GenError(f"{path / INDEX} is not a JSON object; the pipeline folder is damaged")
    if index.get("_class") == "Cascade":  # its stages are pipeline folders, read by gen.cascade
        return index
    if "_class_name" not in index:  # gen's own: it must name its parts and its schedule
        for key in ("denoiser", "schedule"):
            if key not in index:
                raise GenError(f"{path / INDEX} has no {key!r} entry; the pipeline folder is damaged")
        if not isinstance(index.get("schedule"), dict) or not isinstance(index.get("defaults", {}), dict):
            raise GenError(f"{path / INDEX}: 'schedule' and 'defaults' must be JSON objects")
        for key in ("denoiser", "text_encoder", "vae"):
            if index.get(key) is not None and (not isinstance(index[key], str) or Path(index[key]).is_absolute()
                                               or ".." in Path(index[key]).parts):
                raise GenError(f"{path / INDEX}: {key} must name a subfolder of the pipeline, got {index[key]!r}")
    return index


def is_local_model(name: str, kind: str = "image") -> bool:
    """A shipped name or a path on this machine (loading it contacts no network)."""
    return name in shipped_models(kind) or Path(name).exists()


def unknown_model(name: str, shipped: dict, hub: bool = False) -> str:
    """The error for a --model that names nothing here, with the closest local names."""
    import difflib

    path = Path(name)
    if path.exists():
        return f"--model {name} is not a model folder (no {INDEX} in it)"
    near = difflib.get_close_matches(name, list(shipped), n=1)
    parent = path.parent if str(path.parent) not in ("", ".") else Path(".")
    if parent.is_dir():
        siblings = [str(parent / p.name) if str(path.parent) not in ("", ".") else p.name
                    for p in parent.iterdir() if p.is_dir()]
        near += difflib.get_close_matches(name, siblings, n=1)
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    text = (f"unknown model {name!r}: no such folder here{hint}, and not a shipped name "
            f"({', '.join(sorted(shipped)) or 'none yet'})")
    if hub:
        text += (f"; as a Hugging Face hub id it is not in the local cache: pass --download (Python: "
                 f"local_files_only=False) to fetch it, or run `hf download {name}` where there is network and "
                 f"pass the folder")
    return text


def load_pipeline(name_or_path: str, device="cpu", dtype: torch.dtype | None = None):
    """The Pipeline or VideoPipeline a name or folder holds (whichever kind it is)."""
    path = shipped_models().get(name_or_path) or Path(name_or_path)
    kind = "image"
    if (path / INDEX).is_file():
        kind = _read_index(path).get("kind", "image")
    return (VideoPipeline if kind == "video" else Pipeline).from_pretrained(name_or_path, device, dtype)


def _floats(module, dtype) -> dict[str, torch.Tensor]:
    """A module's state at the precision it would be saved in."""
    return {k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).cpu()
            for k, v in module.state_dict().items()}


def _same_weights(a, b, dtype) -> bool:
    sa, sb = _floats(a, dtype), _floats(b, dtype)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _save_difference(module, base_module, folder: Path, dtype) -> None:
    """config.json + model.safetensors holding only the tensors that differ from `base_module`'s."""
    from safetensors.torch import save_file

    from models.base import CONFIG_NAME, WEIGHTS_NAME, _atomic_write, config_to_dict

    base = _floats(base_module, dtype)
    own = {k: v.contiguous() for k, v in _floats(module, dtype).items()
           if not (k in base and base[k].shape == v.shape and torch.equal(base[k], v))}
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class": type(module).__name__, **config_to_dict(module.config)}
    _atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    _atomic_write(folder / WEIGHTS_NAME,
                  lambda tmp: save_file(own, tmp, metadata={"class": type(module).__name__, "base": "yes"}))


def _load_difference(folder: Path, base_module, device):
    """Rebuild a module saved by `_save_difference`: the base's tensors, then its own."""
    import models
    from safetensors.torch import load_file

    config = models.read_config(folder)
    module = models.base.MODEL_CLASSES[config.pop("_class")].from_config(config)
    state = {k: v for k, v in base_module.state_dict().items() if k in module.state_dict()}
    state.update(load_file(str(folder / "model.safetensors")))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return module.to(device)


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

    def save_pretrained(self, path, overwrite: bool = False, dtype: torch.dtype | None = None,
                        base: str | None = None) -> Path:
        """Write the folder; a new one is assembled beside and swapped in whole. `dtype`
        stores the weights at that precision (torch.float16 halves a shipped model).

        `base` (a shipped pipeline name) stores only what differs from that pipeline: a
        text encoder equal to the base's is not written, and the denoiser keeps only the
        tensors that are not bit-equal to the base denoiser's same-named ones (a video
        model trained on a frozen image model stores its temporal layers: a motion module,
        as in AnimateDiff). Loading reads the base first.
        """
        from dataclasses import asdict

        path = Path(path)
        base_pipe = None
        if base is not None:
            if base not in shipped_models():
                raise GenError(f"base {base!r} is not a shipped pipeline ({', '.join(sorted(shipped_models()))})")
            base_pipe = Pipeline.from_pretrained(base)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise GenError(f"{path} exists and is not empty; choose a new folder or pass overwrite=True")
        if path.exists() and any(path.iterdir()) and not (path / INDEX).is_file():
            raise GenError(f"{path} is not a pipeline folder (no {INDEX}); refusing to replace it")
        tmp = path.with_name(f".{path.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            index = {"_class": type(self).__name__, "kind": self.kind, "denoiser": "denoiser",
                     "text_encoder": "text_encoder" if self.text_encoder is not None else None,
                     "vae": "vae" if self.vae is not None else None, "schedule": self.schedule.to_dict(),
                     "defaults": asdict(self.defaults)}
            if base_pipe is None:
                self.denoiser.save_pretrained(tmp / "denoiser", dtype=dtype)
            else:
                index["base"] = base
                _save_difference(self.denoiser, base_pipe.denoiser, tmp / "denoiser", dtype)
            if self.text_encoder is not None:
                if base_pipe is not None and _same_weights(self.text_encoder, base_pipe.text_encoder, dtype):
                    index["text_encoder"] = "base"
                else:
                    self.text_encoder.save_pretrained(tmp / "text_encoder", dtype=dtype)
            if self.vae is not None:
                self.vae.save_pretrained(tmp / "vae", dtype=dtype)
            (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def from_pretrained(cls, name_or_path: str = "default", device="cpu", dtype: torch.dtype | None = None,
                        local_files_only: bool = True):
        """A shipped name, a gen pipeline folder, or a diffusers Stable-Diffusion folder or hub
        id (run with gen's samplers: gen/diffusers_pipeline.py). A hub id is read from the
        Hugging Face cache; only `local_files_only=False` (`--download`) lets it be fetched."""
        import models
        from samplers import NoiseSchedule

        from gen import diffusers_pipeline

        shipped = shipped_models(cls.kind)
        path = shipped.get(name_or_path) or Path(name_or_path)
        if not (path / INDEX).is_file():
            name = str(name_or_path)
            if diffusers_pipeline.is_hub_id(name) and (not local_files_only or diffusers_pipeline.is_cached(name)):
                return diffusers_pipeline.DiffusersPipeline.from_pretrained(name, device, dtype, local_files_only)
            raise GenError(unknown_model(name, shipped, hub=diffusers_pipeline.is_hub_id(name)))
        index = _read_index(path)
        if diffusers_pipeline.is_diffusers_index(index):
            if cls.kind == "video":
                raise GenError(f"{name_or_path} is a text-to-image model; `gen video` needs a video model")
            return diffusers_pipeline.DiffusersPipeline.from_pretrained(path, device, dtype)
        kind = index.get("kind", "image")
        if index.get("_class") == "Cascade" and cls.kind == "image" and kind == "image":
            from gen.cascade import Cascade

            return Cascade.from_index(path, index, device=device, dtype=dtype, name=str(name_or_path))
        if kind != cls.kind:
            what = {"image": "a text-to-image model; use it with `gen image`",
                    "video": "a text-to-video model; use it with `gen video`",
                    "sr": "a super-resolution stage (gen.superres.SuperResolution), not a text-to-image model"}
            raise GenError(f"{name_or_path} is {what.get(kind, f'of kind {kind!r}, which gen does not know')}")

        base = None
        if index.get("base"):
            if index["base"] not in shipped:
                raise GenError(f"{path} builds on the shipped pipeline {index['base']!r}, which is not installed")
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
        return cls(denoiser, text_encoder, schedule, defaults, vae=vae, name=str(name_or_path))

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
        x_T = self.noise(seeds, self.latent_shape(size or self.defaults.size))
        x0 = self.denoise(prompts, x_T, steps, sampler, cfg, negative, callback)
        return self.decode(x0).clamp(-1, 1)

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
                cfg: float | None = None, negative: str | None = None, callback=None) -> torch.Tensor:
        """Run the sampler from x_T with text guidance; returns x_0 (pixels or latents)."""
        from samplers import CFG, sample

        steps, sampler, cfg = self.check_sampling(steps, sampler, cfg)
        d = self.defaults
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

        def model(x, t, c):
            return self.denoiser(x.to(dtype), t, c).float()

        with torch.no_grad():
            x0 = sample(model, x_T, self.schedule, method=sampler, steps=steps,
                        spacing=None if sampler.startswith("diffusers:") else d.spacing,
                        clip_x0=d.clip_x0, cond=cond, guidance=guidance, callback=callback)
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



class VideoPipeline(Pipeline):
    """Text encoder + video denoiser + schedule (+ video VAE): prompts in, clips out.

        pipe = VideoPipeline.from_pretrained("default")
        clips = pipe("a ball rolling left", seed=0)   # [[PIL frame, ...]] one list per clip
        x = pipe.generate(["a ball rolling left"], [0], frames=8)   # (B, C, T, H, W) in [-1, 1]

    The denoiser works on any frame count its positions allow (a warning past the trained
    count). `init_image` animates a still: frame 0 is held to the image throughout
    sampling by replacement (the known part of x_t is set to the image noised to the
    current level after every step, as in RePaint / video diffusion's conditional
    sampling), so it works with any video model and gen's own samplers.
    """

    kind = "video"

    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None, sampler: str | None = None,
                 cfg: float | None = None, negative: str | None = None, size: int | None = None,
                 frames: int | None = None, init_image: torch.Tensor | None = None, callback=None) -> torch.Tensor:
        """Clips (B, C, T, H, W) in [-1, 1]; clip i starts from noise seeded by seeds[i].
        `init_image`: (C, H, W) in [-1, 1], the first frame of every clip."""
        size = size or self.defaults.size
        frames = frames or self.defaults.frames
        shape = self.latent_shape(size, frames)
        x_T = self.noise(seeds, shape)
        if init_image is not None:
            callback = self._hold_first_frame(init_image, size, x_T, steps, sampler, callback)
        x0 = self.denoise(prompts, x_T, steps, sampler, cfg, negative, callback)
        return self.decode(x0).clamp(-1, 1)

    def latent_shape(self, size: int, frames: int | None = None) -> tuple[int, int, int, int]:
        """(C, T, h, w) of one x_T for a clip of `frames` frames of size x size pixels."""
        cfg = self.denoiser.config
        frames = frames or self.defaults.frames or cfg.frames
        if not (isinstance(frames, int) and frames >= 1):
            raise GenError(f"--frames must be a positive integer, got {frames!r}")
        latent_frames = frames
        if self.vae is not None:
            tf = self.vae.temporal_factor
            if (frames - 1) % tf:
                raise GenError(f"--frames {frames} does not fit the video VAE: it needs 1 + a multiple of {tf} frames")
            latent_frames = self.vae.latent_frames(frames)
        tubelet = getattr(cfg, "tubelet", 1)
        if latent_frames % tubelet:
            raise GenError(f"--frames {frames} is not divisible by the model's tubelet depth {tubelet}")
        trained = self.defaults.frames or cfg.frames
        if frames > MAX_SCALE * trained:
            raise GenError(f"--frames must be at most {MAX_SCALE * trained} ({MAX_SCALE}x the {trained} frames the "
                           f"model was trained on: its frame positions do not reach further, and memory grows "
                           f"with the square of the frame count), got {frames}")
        if frames > trained:
            warnings.warn(f"{frames} frames is past the {trained} the model was trained on; "
                          "quality may drop", stacklevel=3)
        c, h, w = super().latent_shape(size)
        return (c, latent_frames, h, w)

    def _hold_first_frame(self, image: torch.Tensor, size: int, x_T: torch.Tensor, steps, sampler, callback):
        """Set frame 0 of x_T to the image noised to the first level and return a callback
        that re-imposes it at every later level (the last step leaves it exact)."""
        import torch.nn.functional as F

        from samplers import q_sample
        from samplers.timesteps import make_timesteps

        steps, sampler, _ = self.check_sampling(steps, sampler, None)
        if sampler.startswith("diffusers:"):
            raise GenError("--init-image works with gen's own samplers (ddim, ddpm, dpm++2m, heun), "
                           f"not {sampler}")
        if image.dim() != 3 or (self.vae is None and image.shape[0] != x_T.shape[1]):
            raise GenError(f"the init image must be (C, H, W) with {x_T.shape[1]} channels, got {tuple(image.shape)}")
        image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False).to(self.device)  # (1, C, S, S)
        known = image if self.vae is None else self.vae.encode(image[:, :, None]).float()[:, :, 0]
        known = known.expand(x_T.shape[0], -1, -1, -1)  # (B, C, h, w)
        ts = make_timesteps(self.schedule.num_train_timesteps, steps, self.defaults.spacing)
        eps = torch.randn(known.shape, generator=torch.Generator().manual_seed(0)).to(self.device)

        def at(t: int) -> torch.Tensor:
            return q_sample(known, torch.full((known.shape[0],), t, device=self.device), eps, self.schedule)

        x_T[:, :, 0] = at(ts[0])

        def hold(i, t, x_t, x0):
            x_t[:, :, 0] = at(ts[i + 1]) if i + 1 < len(ts) else known
            return callback(i, t, x_t, x0) if callback is not None else None

        return hold

    def __call__(self, prompt: str | list[str], n: int = 1, seed: int = 0, **kwargs) -> list[list]:
        """One list of PIL frames per clip (n clips per prompt; clip k of a prompt uses seed + k)."""
        from PIL import Image

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(n)]
        seeds = [seed + k for _ in range(len(prompts) // n) for k in range(n)]
        clips = self.generate(prompts, seeds, **kwargs)
        return [[Image.fromarray(f) for f in frames] for frames in clips_to_uint8(clips)]


def clips_to_uint8(clips: torch.Tensor) -> np.ndarray:
    """(B, C, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3)."""
    b, c, t, h, w = clips.shape
    frames = to_uint8(clips.transpose(1, 2).reshape(b * t, c, h, w))
    return frames.reshape(b, t, h, w, 3)

def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C) (grayscale repeated to RGB)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1).numpy()
