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
    count). `init_image` animates a still: frame 0 is given to the sampler as known
    (`samplers.sample(..., known=...)`: every step's x_0 keeps the image's value there, so
    the clip's first frame is the image and the other frames are drawn to agree with it);
    it works with any video model and every sampler, diffusers' schedulers included.
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
        known = None if init_image is None else self.first_frame_known(init_image, size, x_T)
        x0 = self.denoise(prompts, x_T, steps, sampler, cfg, negative, callback, known=known)
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

    def first_frame_known(self, image: torch.Tensor, size: int, x_T: torch.Tensor):
        """(values, mask) for the samplers' `known`: frame 0 is the image (C, H, W) in [-1, 1],
        resized to the clip's size (its latent with a VAE: the image encoded as a one-frame clip)."""
        import torch.nn.functional as F

        if not isinstance(image, torch.Tensor) or image.dim() != 3 \
                or (self.vae is None and image.shape[0] != x_T.shape[1]):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise GenError(f"the init image must be a tensor (C, H, W) with {x_T.shape[1]} channels, got {got}")
        image = F.interpolate(image[None].float().clamp(-1, 1), size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False).to(self.device)  # (1, C, S, S)
        first = image if self.vae is None else self.vae.encode(image[:, :, None]).float()[:, :, 0]
        values = torch.zeros((1, *x_T.shape[1:]), device=self.device)
        values[:, :, 0] = first
        mask = torch.zeros((1, 1, x_T.shape[2], 1, 1), device=self.device)
        mask[:, :, 0] = 1
        return values, mask

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

