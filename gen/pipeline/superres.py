"""A spatial super-resolution stage of the cascade (Saharia et al. 2022, SR3; Ho et al.
2021, Cascaded Diffusion Models): a denoiser that draws a high-resolution image given a
low-resolution one.

    from gen.pipeline import SuperResolution
    sr = SuperResolution.from_pretrained("runs/sr/pipeline")
    high = sr.upscale(low, seeds=[0, 1])        # (B, C, h, w) in [-1, 1] -> (B, C, h*s, w*s)

The low-resolution input is concatenated to x_t (the denoiser upsamples it) after being
noised by the forward process to the stage's augmentation level (noise-conditioning
augmentation, CDM section 4.2; Imagen section 2.5): the same corruption the stage saw in
training at a random level it was told, so it does not copy the artefacts of the stage
before it. The level is a fraction of the schedule: 0 leaves the input as it is (up to
the first timestep's noise), 1 drowns it.
"""

from __future__ import annotations

import torch

from gen.errors import GenError
from gen.pipeline.image import Pipeline


def box_downsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Each scale x scale block averaged: the low-resolution pairs the stage trains on."""
    if images.shape[-1] % scale or images.shape[-2] % scale:
        raise GenError(f"image side {tuple(images.shape[-2:])} is not divisible by --scale {scale}")
    return torch.nn.functional.avg_pool2d(images, scale)


def noise_timestep(level: float, num_train_timesteps: int) -> int:
    """The schedule's timestep for an augmentation level in [0, 1]."""
    if not 0 <= level <= 1:
        raise GenError(f"--sr-noise must be between 0 and 1 (a fraction of the noise schedule), got {level}")
    return round(level * (num_train_timesteps - 1))


def augment(low: torch.Tensor, t_aug: torch.Tensor, noise: torch.Tensor, schedule) -> torch.Tensor:
    """The low-resolution input noised by the forward process at timesteps t_aug (B,)."""
    from samplers import q_sample

    return q_sample(low, t_aug, noise, schedule)


def sr_condition(low: torch.Tensor, t_aug: torch.Tensor, noise: torch.Tensor, schedule) -> dict:
    """The cond of a super-resolution stage, the same in training and sampling: the
    low-resolution input augmented at t_aug, and t_aug itself."""
    return {"low_res": augment(low, t_aug, noise, schedule), "noise_level": t_aug}


class SuperResolution(Pipeline):
    """Denoiser (+ optional text encoder) + schedule: low-resolution images in, images
    `defaults.scale` times larger out. Defaults carry the stage's scale, sampler, steps
    and augmentation level (`sr_noise`)."""

    kind = "sr"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.device.type == "cpu":  # a conv net: channels_last runs its bf16 convolutions several times faster
            self.denoiser.to(memory_format=torch.channels_last)

    @property
    def regression(self) -> bool:
        """A regression stage (SR3's regression model) draws its image in one forward pass."""
        return self.defaults.sampler == "regression"

    def check_sampling(self, steps, sampler, cfg):
        if not self.regression:
            return super().check_sampling(steps, sampler, cfg)
        if steps not in (None, 1) or sampler not in (None, "regression"):
            raise GenError("this stage is a regression model: it draws in one pass, so --steps and --sampler "
                           "do not apply")
        return 1, "regression", 1.0

    def upscale(self, low: torch.Tensor, seeds: list[int], steps: int | None = None, sampler: str | None = None,
                sr_noise: float | None = None, callback=None) -> torch.Tensor:
        """(B, C, h, w) in [-1, 1] -> (B, C, h * scale, w * scale) in [-1, 1]; image i drawn
        from noise seeded by seeds[i], its augmentation noise from the same seed."""
        from samplers import sample

        d = self.defaults
        if low.dim() != 4 or low.shape[1] != self.denoiser.config.in_channels:
            raise GenError(f"the stage takes images (B, {self.denoiser.config.in_channels}, h, w), "
                           f"got shape {tuple(low.shape)}")
        if len(seeds) != low.shape[0]:
            raise GenError(f"{low.shape[0]} images but {len(seeds)} seeds")
        steps, sampler, _ = self.check_sampling(steps, sampler, 1.0)
        h, w = low.shape[-2] * d.scale, low.shape[-1] * d.scale
        dtype = next(self.denoiser.parameters()).dtype
        level = d.sr_noise if sr_noise is None else sr_noise
        t_aug = noise_timestep(level, self.schedule.num_train_timesteps)
        x_T, aug = [], []
        for s in seeds:  # one generator per image: x_T first (none for a regression stage), then its augmentation
            g = torch.Generator().manual_seed(s)
            if not self.regression:
                x_T.append(torch.randn((low.shape[1], h, w), generator=g))
            aug.append(torch.randn(low.shape[1:], generator=g))
        aug = torch.stack(aug).to(self.device)
        t = torch.full((low.shape[0],), t_aug, dtype=torch.long, device=self.device)
        clean = low.to(self.device).float()
        if self.regression and level == 0:  # as trained without augmentation: the input itself
            cond = {"low_res": clean, "noise_level": torch.zeros_like(t)}
        else:
            cond = sr_condition(clean, t, aug, self.schedule)
        if self.regression:
            zero = torch.zeros(low.shape[0], dtype=torch.long, device=self.device)
            with torch.no_grad(), self.autocast():
                out = self.denoiser(torch.zeros((*low.shape[:2], h, w), dtype=dtype, device=self.device), zero,
                                    {k: v.to(dtype) if v.is_floating_point() else v for k, v in cond.items()})
            return out.float().clamp(-1, 1)
        x_T = torch.stack(x_T).to(self.device)

        def model(x, t_, c):
            return self.denoiser(x.to(dtype), t_, {k: v.to(dtype) if v.is_floating_point() else v
                                                  for k, v in c.items()}).float()

        with torch.no_grad(), self.autocast():
            x0 = sample(model, x_T, self.schedule, method=sampler, steps=steps, spacing=d.spacing,
                        clip_x0=d.clip_x0, cond=cond, callback=callback)
        return x0.clamp(-1, 1)


__all__ = ["SuperResolution", "augment", "box_downsample", "noise_timestep", "sr_condition"]
