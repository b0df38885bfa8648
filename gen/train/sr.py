"""What the loop trains for `gen train sr`: a spatial super-resolution stage.

Pairs come from the data the user has: each high-resolution image (or a random `crop` of
it) is box-downsampled by `scale` to its low-resolution input. With `sr_regression` it trains
SR3's regression model instead: the same U-Net predicting the image from the low-res input
in one pass (MSE), the input augmented as below unless sr_aug_max is 0. Loss per step otherwise: the
diffusion loss of the high-resolution image (as for text-to-image), with the low-res
input noised by the forward process at a random level t_aug ~ U{0..sr_aug_max (T-1)} and both given
to the denoiser: cond = {low_res: q_sample(low, t_aug), noise_level: t_aug}
(noise-conditioning augmentation, Ho et al. 2021; Imagen section 2.5). The stage is
fully convolutional, so it trains on crops and runs at any size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gen.errors import GenError
from gen.train.config import TrainConfig


class SRModel(nn.Module):
    """The trained unit: the denoiser alone (the stage takes no text)."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x_t, t, cond):
        return self.denoiser(x_t, t, cond)


def random_crops(images: torch.Tensor, side: int, gen: torch.Generator) -> torch.Tensor:
    """One random side x side crop per image, positions drawn from `gen`."""
    h, w = images.shape[-2:]
    if side > min(h, w):
        raise GenError(f"--crop {side} is larger than the training images ({h}x{w})")
    top = torch.randint(0, h - side + 1, (images.shape[0],), generator=gen).tolist()
    left = torch.randint(0, w - side + 1, (images.shape[0],), generator=gen).tolist()
    return torch.stack([img[:, y:y + side, x:x + side] for img, y, x in zip(images, top, left)])


class SRTask:
    export_name = "pipeline"

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.side = cfg.crop or cfg.size
        if cfg.size % cfg.scale or self.side % cfg.scale:
            raise GenError(f"--size {cfg.size} and --crop {self.side} must be multiples of --scale {cfg.scale}")

    def build(self):
        import models
        from gen.data import open_dataset
        from samplers import NoiseSchedule

        cfg = self.cfg
        dataset = open_dataset(cfg.data, size=cfg.size, n=cfg.data_n, seed=cfg.seed, channels=cfg.channels,
                               kind=cfg.data_kind, split=cfg.data_split, caption_column=cfg.caption_column,
                               download=cfg.download)
        torch.manual_seed(cfg.seed)
        try:
            denoiser = models.create(cfg.model, **{"in_channels": cfg.channels, "sample_size": self.side,
                                                   **cfg.model_overrides})
        except ValueError as err:
            raise GenError(str(err)) from None
        c = denoiser.config
        if not isinstance(denoiser, models.UNet) or c.video or "low_res" not in c.concat_keys or not c.noise_level:
            raise GenError(f"--model {cfg.model} is not a super-resolution U-Net (concat_keys=('low_res',), "
                           f"noise_level=True); use sr-unet-s or sr-unet-tiny")
        if c.text_dim is not None or c.pooled_dim is not None:
            raise GenError(f"--model {cfg.model} expects text; super-resolution stages here take none "
                           f"(use sr-unet-s or sr-unet-tiny)")
        model = SRModel(denoiser).to(self.device)
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # U-Net convs: ~6x faster with bf16
        self.schedule = NoiseSchedule.create(**cfg.schedule)
        self.model = model
        self.fixed = torch.stack([dataset[i]["image"] for i in range(min(4, len(dataset)))])  # sample grid rows
        return dataset, model

    def pair(self, images: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(high-res x_0, low-res input) for a batch of training images."""
        from gen.pipeline.superres import box_downsample

        high = random_crops(images, self.cfg.crop, gen) if self.cfg.crop else images
        return high, box_downsample(high, self.cfg.scale)

    def loss(self, trained, batch, gen: torch.Generator, autocast):
        from gen.pipeline.superres import noise_timestep, sr_condition
        from samplers import loss_weights, q_sample, training_target

        cfg, dev = self.cfg, self.device
        x0, low = self.pair(batch["image"], gen)
        x0, low = x0.to(dev), low.to(dev)
        b, T = x0.shape[0], self.schedule.num_train_timesteps
        if cfg.sr_regression:  # the image from the (augmented) low-res input alone, in one pass
            zero = torch.zeros(b, dtype=torch.long, device=dev)
            cond = {"low_res": low, "noise_level": zero}
            if cfg.sr_aug_max > 0:
                t_aug = torch.randint(0, noise_timestep(cfg.sr_aug_max, T) + 1, (b,), generator=gen).to(dev)
                cond = sr_condition(low, t_aug, torch.randn(low.shape, generator=gen).to(dev), self.schedule)
            with autocast:
                pred = trained(torch.zeros_like(x0), zero, cond)
            return F.mse_loss(pred.float(), x0), {}
        t = torch.randint(0, T, (b,), generator=gen).to(dev)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        t_aug = torch.randint(0, noise_timestep(cfg.sr_aug_max, T) + 1, (b,), generator=gen).to(dev)
        cond = sr_condition(low, t_aug, torch.randn(low.shape, generator=gen).to(dev), self.schedule)
        x_t = q_sample(x0, t, noise, self.schedule)
        target = training_target(x0, noise, t, self.schedule)
        with autocast:
            pred = trained(x_t, t, cond)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
        weights = loss_weights(t, self.schedule, "min_snr" if cfg.loss_weighting == "min_snr" else "uniform",
                               cfg.min_snr_gamma)
        return (per_sample * weights).mean(), {}

    def pipeline(self, model, ema):
        from gen.pipeline import SamplingDefaults
        from gen.pipeline.superres import SuperResolution
        from gen.train.ema import averaged

        cfg = self.cfg
        regression = cfg.sr_regression
        defaults = SamplingDefaults(sampler="regression" if regression else "ddim",
                                    size=self.side, steps=1 if regression else cfg.sample_steps, cfg=1.0, clip_x0=1.0,
                                    scale=cfg.scale,
                                    sr_noise=0.0 if regression and cfg.sr_aug_max == 0 else cfg.sr_noise)
        return SuperResolution(averaged(model, ema).denoiser.cpu(), None, self.schedule, defaults)

    def export(self, run: Path, model, ema) -> Path:
        """Save the EMA weights as a stage folder (`gen upscale --model PATH`)."""
        return self.pipeline(model, ema).save_pretrained(run / self.export_name, overwrite=True)

    def sample(self, path: Path, model, ema) -> Path:
        """A grid, one row per fixed training image: low-res | bicubic | SR | truth."""
        import numpy as np
        from PIL import Image

        from gen.pipeline import to_uint8
        from gen.pipeline.superres import box_downsample

        stage = self.pipeline(model, ema)
        truth = self.fixed
        low = box_downsample(truth, self.cfg.scale)
        size = truth.shape[-2:]
        nearest = F.interpolate(low, size=size, mode="nearest")
        bicubic = F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
        sr = stage.upscale(low, seeds=list(range(len(low))))
        rows = [np.concatenate(list(to_uint8(torch.stack(group))), axis=1)
                for group in zip(nearest, bicubic, sr, truth)]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
        return path
