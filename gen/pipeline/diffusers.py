"""Diffusers text-to-image pipeline folders (Stable Diffusion layout), run with gen's samplers.

    pipe = Pipeline.from_pretrained("path/to/stable-diffusion-v1-5")    # or a cached hub id
    images = pipe("a cat in a hat", seed=0, sampler="dpm++2m", steps=20)

A diffusers folder names its parts in `model_index.json` (`_class_name` e.g.
"StableDiffusionPipeline") and holds one subfolder per part: unet/ (UNet2DConditionModel),
vae/ (AutoencoderKL), text_encoder/ (transformers CLIPTextModel), tokenizer/
(CLIPTokenizer) and scheduler/. Only the parts are used; diffusers' pipeline class and
its scheduler class are not. What runs (Rombach et al. 2022):

    prompt --CLIPTokenizer, padded to 77--> CLIPTextModel --> cond {text: last hidden state,
                                                                    pooled: pooled output}
    x_T ~ N(0, I) of shape (4, H/8, W/8) --samplers.sample(DiffusersUNet2D, ...)--> z_0
    z_0 / vae.config.scaling_factor --vae.decode--> pixels in [-1, 1]

The schedule (betas, prediction type, zero terminal SNR) comes from
scheduler/scheduler_config.json. Classifier-free guidance takes the embedding of the empty
prompt (or of the negative prompt) as its unconditional half, diffusers' convention,
not gen's learned null. The U-Net attends to all 77 tokens, padding included, as SD was
trained. Defaults: size = unet sample_size x the VAE's factor, 30 DDIM steps, cfg 7.5,
the config's `timestep_spacing` ("leading" when absent), no x_0 clipping.

Where the result differs from diffusers' own pipeline with the same scheduler settings:
- Our samplers step from the last timestep to clean data (alpha_bar = 1). DDIM configs
  with `set_alpha_to_one: false` (SD 1.x / 2.x) make diffusers stop at alpha_bar_0
  instead, leaving sqrt(1 - alpha_bar_0) ~ 0.03 of predicted noise in the latent.
- `steps_offset` is not applied: our "leading" timesteps are i * (T // N); diffusers'
  StableDiffusionPipeline forces steps_offset = 1 and visits i * (T // N) + 1.
- No safety checker runs.
With set_alpha_to_one true and steps_offset 0 (or "trailing" spacing) our "ddim" with
eta 0 matches diffusers' DDIMScheduler step for step (tests/test_diffusers_pipeline.py).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from gen.errors import GenError
from gen.pipeline.folder import INDEX
from gen.pipeline.image import Pipeline, SamplingDefaults

# The parts we load and the files each needs; a tuple lists alternatives (first one named
# when all are missing). Weights are safetensors only: pickled .bin files are never read.
PARTS = {
    "unet": ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")),
    "vae": ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")),
    "text_encoder": ("config.json", ("model.safetensors", "model.safetensors.index.json")),
    "tokenizer": (("vocab.json", "tokenizer.json"),),
    "scheduler": ("scheduler_config.json",),
}
# What a hub download fetches: configs, tokenizer files and safetensors weights (with shards).
HUB_FILES = [INDEX, "scheduler/*.json", "tokenizer/*",
             "text_encoder/config.json", "text_encoder/model.safetensors*", "text_encoder/model-*.safetensors",
             *(f"{part}/{name}" for part in ("unet", "vae") for name in (
                 "config.json", "diffusion_pytorch_model.safetensors*", "diffusion_pytorch_model-*.safetensors"))]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_diffusers_index(index: dict) -> bool:
    """A diffusers model_index.json names its pipeline class; gen's own says "_class": "Pipeline"."""
    return "_class_name" in index


def is_hub_id(name: str) -> bool:
    """"org/name", not a path that exists here."""
    return bool(HUB_ID.match(name)) and not Path(name).exists()


def is_cached(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of `repo_id` (looked up, never fetched)."""
    try:
        import huggingface_hub

        huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError), a malformed id, no huggingface_hub
        return False
    return True


class DiffusersVAE(nn.Module):
    """An AutoencoderKL behind the pipeline's VAE contract: decode(z) -> pixels in [-1, 1].

    The denoiser's latents are the VAE's scaled by `scaling_factor` (and shifted by
    `shift_factor` where the config has one), so z / scaling_factor + shift is decoded.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.model = vae
        conf = vae.config
        self.scale_factor = 2 ** (len(conf.block_out_channels) - 1)
        self.latent_channels = conf.latent_channels
        self.image_channels = conf.in_channels
        self.scaling_factor = conf.scaling_factor
        self.shift_factor = getattr(conf, "shift_factor", None) or 0.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> the denoiser's latents: the posterior's mean, shifted and scaled."""
        z = self.model.encode(x.to(self.model.dtype)).latent_dist.mode()
        return (z.float() - self.shift_factor) * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z / self.scaling_factor + self.shift_factor  # (B, 4, H/8, W/8)
        return self.model.decode(z.to(self.model.dtype), return_dict=False)[0]  # (B, 3, H, W)


class DiffusersPipeline(Pipeline):
    """A diffusers Stable-Diffusion-layout folder as a gen Pipeline (see the module doc)."""

    def __init__(self, denoiser, text_encoder, tokenizer, schedule, vae: DiffusersVAE,
                 defaults: SamplingDefaults | None = None, name: str = ""):
        super().__init__(denoiser, text_encoder, schedule, defaults, vae=vae, name=name,
                         null_conditioning="empty_prompt")
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, name_or_path, device="cpu", dtype: torch.dtype | None = None,
                        local_files_only: bool = True) -> DiffusersPipeline:
        """Load a diffusers pipeline folder, or a hub id: from the Hugging Face cache, and
        only with `local_files_only=False` (and no HF_HUB_OFFLINE) downloaded once, with no retries."""
        name = str(name_or_path)
        path = Path(name)
        if not (path / INDEX).is_file():
            if not is_hub_id(name):
                raise GenError(f"{name} is not a diffusers pipeline folder (no {INDEX})")
            path = _resolve_hub_id(name, local_files_only)
        return cls._load(path, device, dtype, name)

    @classmethod
    def _load(cls, path: Path, device, dtype, name: str) -> DiffusersPipeline:
        import diffusers

        try:
            import transformers
        except ImportError:
            from gen.errors import missing_package

            raise missing_package("transformers", f"the Stable Diffusion folder {path} (its CLIP text encoder)") from None
        from models.adapters import load_diffusers
        from samplers import SPACINGS, NoiseSchedule, SamplerError

        dtype = dtype or torch.float32
        index = _read_index(path)
        _check_files(path)
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        try:
            schedule = NoiseSchedule.from_diffusers_config(scheduler_config)
        except SamplerError as err:
            raise GenError(f"{path / 'scheduler' / 'scheduler_config.json'}: {err}") from None
        spacing = scheduler_config.get("timestep_spacing") or "leading"
        if spacing not in SPACINGS:
            raise GenError(f"{path / 'scheduler'}: timestep_spacing {spacing!r} is not one of {', '.join(SPACINGS)}")

        def load(part, loader):
            try:
                return loader()
            except Exception as err:  # corrupt weights or config, wrong class
                detail = str(err).splitlines()[0] if str(err) else ""
                raise GenError(f"cannot load {path / part}: {type(err).__name__}: {detail}") from None

        unet = load("unet", lambda: load_diffusers(path, subfolder="unet", use_text_mask=False,
                                                   torch_dtype=dtype, use_safetensors=True))
        vae_class = index["vae"][1]
        if vae_class != "AutoencoderKL":
            raise GenError(f"{path / 'vae'} holds a {vae_class}; supported: AutoencoderKL")
        vae = load("vae", lambda: diffusers.AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype,
                                                                         use_safetensors=True))
        text_class, tokenizer_class = index["text_encoder"][1], index["tokenizer"][1]
        if not text_class.startswith("CLIPTextModel") or not tokenizer_class.startswith("CLIPTokenizer"):
            raise GenError(f"{path}: text encoder {text_class} with {tokenizer_class}; supported: "
                           f"CLIPTextModel with CLIPTokenizer")
        text_encoder = load("text_encoder", lambda: getattr(transformers, text_class).from_pretrained(
            path / "text_encoder", dtype=dtype, use_safetensors=True))
        tokenizer = load("tokenizer", lambda: transformers.CLIPTokenizer.from_pretrained(path / "tokenizer"))

        vae = DiffusersVAE(vae)
        sample_size = unet.model.config.sample_size
        sample_size = sample_size if isinstance(sample_size, int) else sample_size[0]
        defaults = SamplingDefaults(sampler="ddim", steps=30, cfg=7.5, spacing=spacing,
                                    size=sample_size * vae.scale_factor, clip_x0=None)
        return cls(unet.to(device), text_encoder.to(device), tokenizer, schedule, vae.to(device), defaults, name=name)

    def encode_prompt(self, prompts: list[str]) -> dict:
        """CLIP conditioning as diffusers' StableDiffusionPipeline computes it: token ids padded
        to the tokenizer's model_max_length (77), the last hidden state (after the final layer
        norm) as cond["text"] and the pooled end-of-text state as cond["pooled"]."""
        tok, enc = self.tokenizer, self.text_encoder
        length = tok.model_max_length
        for p in prompts:
            if len(tok(p, truncation=True, max_length=length + 1).input_ids) > length:
                warnings.warn(f"prompt longer than the text encoder's {length} tokens; truncated: {p!r}",
                              stacklevel=3)
        tokens = tok(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self.device) if getattr(enc.config, "use_attention_mask", False) else None
        with torch.no_grad():
            out = enc(tokens.input_ids.to(self.device), attention_mask=mask)
        pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.text_embeds
        return {"text": out.last_hidden_state, "pooled": pooled}  # (B, 77, D), (B, D')

    def save_pretrained(self, path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        raise GenError(f"{self.name} is a diffusers pipeline folder; gen does not rewrite it: copy the folder "
                       f"(or use diffusers' StableDiffusionPipeline.save_pretrained)")


def _read_index(path: Path) -> dict:
    try:
        index = json.loads((path / INDEX).read_text())
    except json.JSONDecodeError as err:
        raise GenError(f"{path / INDEX} is corrupt: {err}") from None
    kind = index.get("_class_name")
    if "text_encoder_2" in index or "transformer" in index:
        raise GenError(f"{path} holds a {kind}; gen runs diffusers pipelines of the Stable Diffusion layout "
                       f"(one CLIP text encoder and a unet), e.g. StableDiffusionPipeline")
    missing = [p for p in PARTS if not (isinstance(index.get(p), list) and index[p][0])]
    if missing:
        raise GenError(f"{path / INDEX} ({kind}) names no {', '.join(missing)}; gen runs diffusers pipelines of the "
                       f"Stable Diffusion layout (unet, vae, text_encoder, tokenizer, scheduler)")
    return index


def _check_files(path: Path) -> None:
    """Every file a part needs, named when missing (and pickled weights refused by name)."""
    for part, files in PARTS.items():
        for alternatives in files:
            alternatives = (alternatives,) if isinstance(alternatives, str) else alternatives
            if any((path / part / f).is_file() for f in alternatives):
                continue
            wanted = path / part / alternatives[0]
            pickled = sorted(p.name for p in (path / part).glob("*.bin"))
            if pickled:
                raise GenError(f"diffusers pipeline {path} is missing {wanted}: {part}/ has only pickled weights "
                               f"({', '.join(pickled)}), which gen never loads; convert them to safetensors")
            raise GenError(f"diffusers pipeline {path} is missing {wanted}")


def _resolve_hub_id(repo_id: str, local_files_only: bool) -> Path:
    """The local snapshot folder of a hub pipeline: the cache first, then one download attempt."""
    import huggingface_hub
    from huggingface_hub import constants

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a malformed id
        pass
    where = f"not a local folder and not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    fetch = (f"download it where there is network (`hf download {repo_id}`) and pass the folder to --model, "
             f"or copy it into that cache")
    if local_files_only or constants.is_offline_mode():
        why = "local_files_only" if local_files_only else "HF_HUB_OFFLINE is set"
        raise GenError(f"model {repo_id!r} is {where}, and {why}: {fetch}")
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as err:  # no network, no such repo, gated repo
        detail = str(err).splitlines()[0] if str(err) else ""
        raise GenError(f"model {repo_id!r} is {where}, and the hub could not provide it "
                       f"({type(err).__name__}: {detail}): {fetch}") from None
