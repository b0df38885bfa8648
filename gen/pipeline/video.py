"""Text-to-video pipeline: the image pipeline's parts with a video denoiser (+ video VAE)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from gen.errors import GenError
from gen.pipeline.image import MAX_SCALE, Pipeline, to_uint8


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

