"""What the loop trains for `gen train vae`: an image (or, with --video, a causal video)
autoencoder for latent diffusion.

Loss per step: reconstruction (L1 or L2, pixels in [-1, 1]) of x from z ~ q(z | x),
plus kl_weight * KL(q(z | x) || N(0, I)) per latent element (Kingma & Welling 2014;
Rombach et al. 2022 use a small KL weight so the latent stays close to the data), plus
lpips_weight * LPIPS (Zhang et al. 2018) when the AlexNet weights are on this machine
(metrics.reconstruction.lpips_network; the run's log says whether it was used).
Export: the EMA autoencoder with its latent scale and shift measured on training data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from gen.errors import GenError
from gen.train.config import TrainConfig

log = logging.getLogger(__name__)

SCALING_SAMPLES = 512


class VAETask:
    export_name = "vae"

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device

    def build(self):
        import models
        from gen.data import open_dataset

        cfg = self.cfg
        video = cfg.data == "toy-video" or cfg.vae_video
        self.key = "video" if video else "image"
        dataset = open_dataset(cfg.data if not (video and cfg.data == "toy") else "toy-video", size=cfg.size,
                               n=cfg.data_n, seed=cfg.seed, channels=cfg.channels, video=video, kind=cfg.data_kind,
                               frames=cfg.frames if video else None, fps=cfg.fps if video else None,
                               split=cfg.data_split, caption_column=cfg.caption_column, download=cfg.download)
        torch.manual_seed(cfg.seed)
        try:
            create = models.create_video_vae if video else models.create_vae
            vae = create(in_channels=cfg.channels, **cfg.vae_config)
        except (TypeError, ValueError) as err:
            raise GenError(f"VAE config {cfg.vae_config}: {err}") from None
        if video and (cfg.frames - 1) % vae.temporal_factor:
            tf = vae.temporal_factor
            raise GenError(f"--frames {cfg.frames}: the video VAE needs 1 + k*{tf} frames (its first frame is "
                           f"encoded alone), e.g. {1 + tf * ((cfg.frames - 1) // tf)}")
        if cfg.init:
            from gen.pipeline import resolve_vae

            from gen.errors import reading

            folder = resolve_vae(cfg.init)
            with reading(folder, "--init"):
                start = models.load_pretrained(folder)
            try:
                if type(start) is not type(vae):
                    raise RuntimeError(f"it holds a {type(start).__name__}")
                vae.load_state_dict(start.state_dict())
            except RuntimeError as err:
                raise GenError(f"--init {cfg.init} does not fit a {type(vae).__name__} of this config: "
                               f"{str(err).splitlines()[0]}") from None
        if cfg.size % vae.scale_factor:
            raise GenError(f"--size {cfg.size} is not divisible by the VAE factor {vae.scale_factor}")
        from metrics.reconstruction import alexnet_weights_path, lpips_network

        self.lpips = lpips_network(self.device) if cfg.lpips_weight > 0 else None  # once the options are checked
        if cfg.lpips_weight > 0 and self.lpips is None:
            log.warning("LPIPS term off: its AlexNet weights are not at %s", alexnet_weights_path())
        self.dataset, self.model = dataset, vae.to(self.device)
        if self.device.type == "cpu" and not video:
            self.model = self.model.to(memory_format=torch.channels_last)
        return dataset, self.model

    def loss(self, trained, batch, gen: torch.Generator, autocast):
        x = batch[self.key].to(self.device)
        if self.device.type == "cpu" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            recon, kl = trained(x, generator=gen)
        recon = recon.float()
        rec = F.l1_loss(recon, x) if self.cfg.recon_loss == "l1" else F.mse_loss(recon, x)
        kl = kl.float().mean() / x[0].numel()  # per element, as the reconstruction term
        psnr = 10 * torch.log10(4.0 / F.mse_loss(recon.detach(), x).clamp_min(1e-10))
        loss = rec + self.cfg.kl_weight * kl
        metrics = {"recon": rec.item(), "kl": kl.item(), "psnr": psnr.item()}
        if self.lpips is not None:
            from metrics.reconstruction import lpips

            perceptual = lpips(self.lpips, recon, x).mean()
            loss = loss + self.cfg.lpips_weight * perceptual
            metrics["lpips"] = perceptual.item()
        return loss, metrics

    def averaged(self, model, ema):
        from gen.train.ema import averaged

        return averaged(model, ema).cpu()

    @torch.no_grad()
    def export(self, run: Path, model, ema) -> Path:
        """The EMA autoencoder, its latent scale and shift fitted on training images."""
        from gen.data import collate

        vae = self.averaged(model, ema)
        n = min(SCALING_SAMPLES, len(self.dataset))
        images = collate([self.dataset[i] for i in range(n)])[self.key]
        vae.fit_scaling(images)
        return vae.save_pretrained(run / self.export_name, overwrite=True)

    @torch.no_grad()
    def sample(self, path: Path, model, ema) -> Path:
        """Originals (top) and EMA reconstructions (bottom) of the first 8 training images
        (of clips: their first and last frames)."""
        import numpy as np
        from PIL import Image

        from gen.data import collate
        from gen.pipeline import to_uint8

        vae = self.averaged(model, ema)
        x = collate([self.dataset[i] for i in range(min(8, len(self.dataset)))])[self.key]
        rec = vae.decode(vae.encode(x))
        if x.dim() == 5:  # clips: first and last frames side by side
            x, rec = (torch.cat([v[:, :, 0], v[:, :, -1]]) for v in (x, rec))
        rows = [np.concatenate(list(to_uint8(t)), axis=1) for t in (x, rec)]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
        return path
