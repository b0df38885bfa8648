"""What the loop trains for text-to-image (and video): a text encoder and a denoiser.

Loss per step (Ho et al. 2020, with v-prediction and min-SNR weighting as configured):
t ~ U{0..T-1}, eps ~ N(0, I), x_t = q_sample(x_0, t, eps), prediction =
denoiser(x_t, t, text(captions), null=dropped) -> weighted MSE against training_target.
With `vae` set the model works in the autoencoder's latent space: x_0 = vae.encode(pixels),
computed once per image when `cache_latents` is on and kept on disk in the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gen.errors import GenError
from gen.train.config import TrainConfig

log = logging.getLogger(__name__)


class TextToImageModel(nn.Module):
    """The trained unit: a text encoder and a denoiser, as one module for DDP."""

    def __init__(self, denoiser: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.denoiser, self.text_encoder = denoiser, text_encoder

    def forward(self, x_t, t, tokens, null, extra=None):
        cond = self.text_encoder(tokens)
        cond["null"] = null
        cond.update(extra or {})
        return self.denoiser(x_t, t, cond)


def load_vae(path: str, device):
    import models
    from gen.pipeline import resolve_vae

    from gen.errors import reading

    folder = resolve_vae(path)
    with reading(folder, "--vae"):
        vae = models.load_pretrained(folder, device=device)
    return vae.eval().requires_grad_(False)


def start_pipeline(name: str, flag: str):
    """The pipeline a run starts from (`flag` names it); of a cascade such as the shipped
    default, its text-to-image base."""
    from gen.pipeline import Cascade, load_pipeline

    start = load_pipeline(name)
    if isinstance(start, Cascade):
        log.info("%s %s is a cascade: its base, %s, is used", flag, name, start.base.name)
        start = start.base
    return start


class DiffusionTask:
    export_name = "pipeline"

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.vae = load_vae(cfg.vae, device) if cfg.vae else None
        self.cache = None  # (latents, done) memory-mapped arrays under the run folder
        self.start = None  # image --init: the pipeline (a cascade's base) being fine-tuned
        if cfg.kind == "image" and cfg.init:
            self.export_name = "lora" if cfg.lora_rank is not None else "pipeline"
            self.start = self.image_start()
            if self.start.vae is not None and self.vae is None:
                self.vae = self.start.vae.to(device).eval().requires_grad_(False)

    @staticmethod
    def train_new_inputs(denoiser) -> None:
        """Let the input layer (DiT patch embedding, U-Net conv_in) learn its weights on the
        concatenated inputs while those on x, and its bias, stay the image model's: a gradient
        hook zeroes the rest, so AdamW (weight decay 0: the config insists) leaves them as they are."""
        layer = denoiser.patch.proj if hasattr(denoiser, "patch") else denoiser.conv_in
        keep = denoiser.config.in_channels

        def only_new(grad):
            grad = grad.clone()
            grad[:, :keep] = 0
            return grad

        layer.weight.requires_grad_(True)
        layer.weight.register_hook(only_new)

    def pretrained_text_encoder(self):
        """A copy of the text encoder of the pipeline cfg.text_encoder_from (a cascade: its
        base's), kept frozen: a new denoiser trained on a text side that already knows the words."""
        import copy

        start = start_pipeline(self.cfg.text_encoder_from, "--text-encoder-from")
        if getattr(start, "text_encoder", None) is None or not hasattr(start.text_encoder, "tokenize"):
            raise GenError(f"--text-encoder-from {self.cfg.text_encoder_from} has no gen text encoder to reuse")
        return copy.deepcopy(start.text_encoder).float()

    def model_overrides(self) -> dict:
        """The config's model overrides, plus the known-frame inputs of a masked-frame model."""
        overrides = dict(self.cfg.model_overrides)
        if self.cfg.frame_masks:
            overrides["concat_keys"] = ("frames", "frame_mask")
        return overrides

    def image_start(self):
        cfg = self.cfg
        start = start_pipeline(cfg.init, "--init")
        if start.kind != "image" or type(start).__name__ != "Pipeline":
            raise GenError(f"--init {cfg.init} is a {type(start).__name__}; gen train image --init fine-tunes a "
                           f"gen text-to-image pipeline")
        if start.defaults.size != cfg.size:
            raise GenError(f"--size {cfg.size}: {cfg.init} draws {start.defaults.size}x{start.defaults.size}; "
                           f"fine-tune it at --size {start.defaults.size}")
        return start

    def build(self):
        """Dataset and model for the config (deterministic in cfg.seed)."""
        import models
        from gen.data import open_dataset
        from samplers import NoiseSchedule

        cfg = self.cfg
        video = cfg.kind == "video"
        rate = 2 if cfg.dense_interpolate else 1  # clips of twice the frames at twice the rate (the same span)
        dataset = open_dataset(cfg.data, size=cfg.size, n=cfg.data_n, seed=cfg.seed,
                               frames=cfg.frames * rate if video else None, fps=cfg.fps * rate if video else None,
                               channels=cfg.channels, video=video, kind=cfg.data_kind, split=cfg.data_split,
                               caption_column=cfg.caption_column, download=cfg.download)
        in_channels, sample_size = cfg.channels, cfg.size
        if self.vae is not None:
            if cfg.size % self.vae.scale_factor:
                raise GenError(f"--size {cfg.size} is not divisible by the VAE's factor {self.vae.scale_factor}")
            in_channels, sample_size = self.vae.latent_channels, cfg.size // self.vae.scale_factor
        latent_frames = cfg.frames
        if video and self.vae is not None:
            if not hasattr(self.vae, "latent_frames"):
                raise GenError(f"--vae {cfg.vae} is an image VAE; video training needs a video VAE "
                               "(gen train vae --video)")
            tf = self.vae.temporal_factor
            if (cfg.frames - 1) % tf:
                raise GenError(f"--frames {cfg.frames} does not fit the video VAE: it needs 1 + a multiple of {tf}")
            latent_frames = self.vae.latent_frames(cfg.frames)
        torch.manual_seed(cfg.seed)
        if self.start is not None:
            import copy

            denoiser = copy.deepcopy(self.start.denoiser).float().train()
            text_encoder = copy.deepcopy(self.start.text_encoder).float().train()
            if cfg.lora_rank is not None:
                from gen.pipeline.lora import add_lora

                denoiser = add_lora(denoiser, cfg.lora_rank, cfg.lora_alpha)
        elif video and cfg.init:
            denoiser, text_encoder = self.from_image_model(in_channels)
        else:
            text_encoder = self.pretrained_text_encoder() if cfg.text_encoder_from else \
                models.TextEncoder(models.TextEncoderConfig(**cfg.text_encoder))
            try:
                denoiser = models.create(cfg.model, **{"in_channels": in_channels, "sample_size": sample_size,
                                                       "text_dim": text_encoder.dim,
                                                       "pooled_dim": text_encoder.pooled_dim,
                                                       **({"frames": latent_frames} if video else {}),
                                                       **self.model_overrides()})
            except ValueError as err:
                raise GenError(str(err)) from None
        tubelet = getattr(denoiser.config, "tubelet", 1)
        if video and latent_frames % tubelet:
            what = f"{latent_frames} latent frames" if self.vae is not None else f"--frames {cfg.frames}"
            raise GenError(f"{what} not divisible by the model's tubelet depth {tubelet}")
        if denoiser.config.video != video:
            raise GenError(f"--model {cfg.model} is {'a video' if denoiser.config.video else 'an image'} model; "
                           f"use it with `gen train {'video' if denoiser.config.video else 'image'}`")
        if self.vae is not None and denoiser.config.in_channels != self.vae.latent_channels:
            raise GenError(f"the VAE has {self.vae.latent_channels} latent channels but --model {cfg.model} was "
                           f"configured for {denoiser.config.in_channels} input channels")
        model = TextToImageModel(denoiser, text_encoder).to(self.device)
        if not cfg.train_text_encoder or cfg.freeze_spatial or cfg.lora_rank is not None or cfg.text_encoder_from:
            text_encoder.requires_grad_(False)
        if cfg.freeze_spatial:
            for name, param in denoiser.named_parameters():
                param.requires_grad_("temporal" in name)
            if cfg.frame_masks:  # the input layer's weights on the known frames and mask train too
                self.train_new_inputs(denoiser)
        if self.device.type == "cpu" and getattr(denoiser.config, "channels", None):
            model = model.to(memory_format=torch.channels_last)  # U-Net convs: ~6x faster with bf16
        self.schedule = self.start.schedule if self.start is not None else NoiseSchedule.create(**cfg.schedule)
        self.model, self.dataset_len = model, len(dataset)
        if video and cfg.image_ratio:
            if getattr(denoiser.config, "tubelet", 1) > 1:
                raise GenError(f"--image-ratio trains on images as one-frame clips, which --model {cfg.model} "
                               f"cannot take (tubelet depth {denoiser.config.tubelet}); use a model with "
                               "one-frame tubelets or a video U-Net")
            self.images = open_dataset(cfg.image_data or "toy", size=cfg.size, n=cfg.data_n, seed=cfg.seed,
                                       channels=cfg.channels)
        return dataset, model

    def from_image_model(self, in_channels: int):
        """(video denoiser, text encoder) started from the pipeline cfg.init: an image model's
        spatial layers and text encoder with new temporal layers at identity, or a video
        model's every weight (to continue training it, with any layers the model
        overrides add, such as a temporal_conv, at identity)."""
        import models

        cfg = self.cfg
        start = start_pipeline(cfg.init, "--init")
        if (start.vae is None) != (self.vae is None):
            raise GenError(f"--init {cfg.init} works in {'pixel' if start.vae is None else 'latent'} space "
                           f"but this run in {'pixel' if self.vae is None else 'latent'} space; match --vae")
        if start.denoiser.config.in_channels != in_channels:
            raise GenError(f"--init {cfg.init} has {start.denoiser.config.in_channels} input channels, "
                           f"this run needs {in_channels}")
        try:
            if start.kind == "video":  # continue it, with any layers the overrides add
                return models.extend(start.denoiser, **self.model_overrides()), start.text_encoder
            denoiser = models.video_from_image(start.denoiser, frames=cfg.frames,
                                             **self.model_overrides())
        except ValueError as err:
            raise GenError(f"--init {cfg.init}: {err}") from None
        return denoiser, start.text_encoder

    @torch.no_grad()
    def clean(self, batch) -> torch.Tensor:
        """x_0: the pixels, or their (cached) latents."""
        pixels = batch["video" if self.cfg.kind == "video" else "image"]
        if self.vae is None:
            return pixels.to(self.device)
        from gen.train import loop

        if not self.cfg.cache_latents or loop.measuring:  # the memory check's pass fills no cache row
            return self.vae.encode(pixels.to(self.device))
        keys = batch["index"].numpy()
        if self.cache is None:
            self.cache = self.open_cache(self.vae.encode(pixels[:1].to(self.device)).shape[1:])
        latents, done = self.cache
        missing = [i for i, k in enumerate(keys) if not done[k]]
        if missing:
            fresh = self.vae.encode(pixels[missing].to(self.device)).float().cpu().numpy()
            latents[keys[missing]] = fresh
            done[keys[missing]] = True
        return torch.from_numpy(latents[keys]).to(self.device)

    def open_cache(self, shape):
        """RUN/latent-cache.npy (float32 latents, one row per dataset index) and
        RUN/latent-cache-done.npy (which rows are filled): kept across --resume."""
        import numpy as np

        run = Path(self.cfg.out)
        run.mkdir(parents=True, exist_ok=True)
        n = self.dataset_len
        paths = run / "latent-cache.npy", run / "latent-cache-done.npy"
        if all(p.is_file() for p in paths):
            latents, done = (np.lib.format.open_memmap(p, mode="r+") for p in paths)
            if latents.shape == (n, *shape):
                return latents, done
        latents = np.lib.format.open_memmap(paths[0], mode="w+", dtype=np.float32, shape=(n, *shape))
        done = np.lib.format.open_memmap(paths[1], mode="w+", dtype=bool, shape=(n,))
        return latents, done

    def image_batch(self, gen: torch.Generator, size: int) -> dict:
        """Joint training: `size` images drawn with `gen` (so a resumed run draws the same),
        as one-frame clips {"video": (B, C, 1, H, W), "text": [...]}."""
        from gen.data import collate

        picks = torch.randint(0, len(self.images), (size,), generator=gen).tolist()
        batch = collate([self.images[i] for i in picks])
        return {"video": batch["image"][:, :, None], "text": batch["text"]}

    def loss(self, trained, batch, gen: torch.Generator, autocast):
        from samplers import loss_weights, q_sample, training_target

        cfg, dev = self.cfg, self.device
        if cfg.image_ratio and torch.rand((), generator=gen).item() < cfg.image_ratio:
            images = self.image_batch(gen, len(batch["text"]))
            x0 = self.vae.encode(images["video"].to(dev)) if self.vae is not None else images["video"].to(dev)
            batch = images
        else:
            x0 = self.clean(batch)
        tokens = self.model.text_encoder.tokenize(batch["text"]).to(dev)
        mask = None
        if cfg.frame_masks:
            mask = self.frame_masks(x0, gen)
            if cfg.dense_interpolate:
                x0 = self.clip_rates(x0, mask, gen)
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.num_train_timesteps, (b,), generator=gen).to(dev)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        null = (torch.rand(b, generator=gen) < cfg.cond_drop).to(dev)
        x_t = q_sample(x0, t, noise, self.schedule)
        target = training_target(x0, noise, t, self.schedule)
        extra, where = self.known_frames(x0, mask, gen) if mask is not None else (None, None)
        with autocast:
            pred = trained(x_t, t, tokens, null, extra)
        error = F.mse_loss(pred.float(), target.float(), reduction="none")
        if where is None:
            per_sample = error.flatten(1).mean(1)
        else:  # the frames to draw only: known ones are given
            per_sample = (error * where).flatten(1).sum(1) / where.expand_as(error).flatten(1).sum(1).clamp(min=1)
        weights = loss_weights(t, self.schedule, "min_snr" if cfg.loss_weighting == "min_snr" else "uniform",
                               cfg.min_snr_gamma)
        return (per_sample * weights).mean(), {}

    def frame_masks(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, T) known-frame masks for clean clips x0 (B, C, T', H, W): one random mask of
        cfg.frame_masks per clip of the model's T frames (none for one-frame clips, images in
        joint training)."""
        from gen.pipeline.video import random_frame_masks

        frames = self.cfg.frames if self.cfg.dense_interpolate and x0.shape[2] > 1 else x0.shape[2]
        return random_frame_masks(self.cfg.frame_masks if frames > 1 else ("none",), x0.shape[0], frames,
                                  gen).to(x0.device)

    def clip_rates(self, x0: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """--dense-interpolate: x0 holds 2T frames at twice --fps; each clip whose mask is the
        interpolate one becomes T consecutive frames from a random start (the rate temporal SR
        draws, every other frame given), every other clip its even frames (T at --fps)."""
        from gen.pipeline.video import frame_mask

        if x0.shape[2] == 1:  # images in joint training
            return x0
        frames = mask.shape[1]
        dense = (mask == frame_mask("interpolate", frames).to(mask)).all(1)
        start = torch.randint(0, x0.shape[2] - frames + 1, (x0.shape[0],), generator=gen)
        picks = torch.where(dense[:, None].cpu(), start[:, None] + torch.arange(frames), 2 * torch.arange(frames))
        return torch.stack([clip[:, p] for clip, p in zip(x0, picks.to(x0.device))])

    def known_frames(self, x0: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> tuple[dict, torch.Tensor]:
        """A masked-frame model's inputs for clean clips x0 (B, C, T, H, W) and their masks
        (B, T): the known frames with noise of std U(0, known_noise) (against conditional image
        leakage, Zhao et al. 2024), zero elsewhere; and the (B, 1, T, 1, 1) weights of the
        frames to draw."""
        b, dev = x0.shape[0], x0.device
        known = x0
        if self.cfg.known_noise:
            sigma = (torch.rand(b, generator=gen) * self.cfg.known_noise).to(dev)
            known = x0 + sigma.view(-1, 1, 1, 1, 1) * torch.randn(x0.shape, generator=gen).to(dev)
        m = mask[:, None, :, None, None]
        return {"frames": known * m, "frame_mask": mask}, 1 - m

    def pipeline(self, model, ema):
        from gen.pipeline import Pipeline, SamplingDefaults, VideoPipeline
        from gen.train.ema import averaged

        avg = averaged(model, ema)
        cfg = self.cfg
        video = cfg.kind == "video"
        defaults = SamplingDefaults(size=cfg.size, steps=cfg.sample_steps, cfg=cfg.sample_cfg,
                                    clip_x0=None if self.vae is not None else 1.0,
                                    frames=cfg.frames if video else None, fps=cfg.fps if video else None)
        vae = None
        if self.vae is not None:
            import copy

            vae = copy.deepcopy(self.vae).cpu()
        if self.start is not None:
            defaults = self.start.defaults
        kind = VideoPipeline if video else Pipeline
        return kind(avg.denoiser.cpu(), avg.text_encoder.cpu(), self.schedule, defaults, vae=vae)

    def export(self, run: Path, model, ema) -> Path:
        """Save the EMA weights as a pipeline folder (`gen image --model PATH`); a LoRA run, its
        adapters only (RUN/lora: `gen image --model INIT --lora RUN/lora`)."""
        if self.cfg.lora_rank is None:
            return self.pipeline(model, ema).save_pretrained(run / self.export_name, overwrite=True)
        from gen.pipeline.folder import write_folder
        from gen.pipeline.lora import CONFIG, save_lora
        from gen.train.ema import averaged

        denoiser = averaged(model, ema).denoiser
        return write_folder(run / self.export_name, True, lambda tmp: save_lora(denoiser, tmp, base=self.cfg.init),
                            marker=CONFIG)

    def sample(self, path: Path, model, ema) -> Path:
        """A grid of EMA samples: one row per fixed prompt, four fixed seeds (video: one
        clip per prompt, its frames along the row)."""
        import numpy as np
        from PIL import Image

        from gen.pipeline import clips_to_uint8, to_uint8

        pipe = self.pipeline(model, ema)
        prompts = list(self.cfg.prompts)
        if self.cfg.kind == "video":
            clips = clips_to_uint8(pipe.generate(prompts, [0] * len(prompts)))  # (P, T, H, W, 3)
            rows = [np.concatenate(list(clip), axis=1) for clip in clips]
        else:
            prompts = [p for p in prompts for _ in range(4)]
            images = to_uint8(pipe.generate(prompts, [k for _ in self.cfg.prompts for k in range(4)]))
            rows = [np.concatenate(list(images[i:i + 4]), axis=1) for i in range(0, len(images), 4)]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
        return path
