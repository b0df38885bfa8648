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
    count). Known frames (`init_image`, a still that becomes frame 0, or `known_frames`,
    a clip and a frame mask from `frame_mask`) go to the sampler as known
    (`samplers.sample(..., known=...)`: every step's x_0 keeps their values, so the clip
    shows them and the other frames are drawn to agree), with any video model and every
    sampler. A masked-frame model (`concat_keys=("frames", "frame_mask")`, trained with
    random masks: MCVD, Voleti et al. 2022) also reads them as input on every step; with
    no frame known it gets an all-zero mask, and draws the clip from the text alone.
    """

    kind = "video"

    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None, sampler: str | None = None,
                 cfg: float | None = None, negative: str | None = None, size: int | None = None,
                 frames: int | None = None, init_image: torch.Tensor | None = None, known_frames=None,
                 callback=None, frame_cfg: float = 1.0) -> torch.Tensor:
        """Clips (B, C, T, H, W) in [-1, 1]; clip i starts from noise seeded by seeds[i].
        `init_image`: (C, H, W) in [-1, 1], the first frame of every clip. `known_frames`:
        (clips, mask), clips (1 or B, C, T, H, W) in [-1, 1] and mask (T,) or (B, T), 1 where a
        frame is known (pixel-space models). A pixel-space masked-frame model asked for more
        frames than it was trained on draws its trained count, then `extend`s the clip.
        `frame_cfg`: a masked-frame model's guidance weight on its known frames, beside `cfg` on
        the text (1 = none; see `frame_guidance`)."""
        size = size or self.defaults.size
        frames = frames or self.defaults.frames
        if not 0 <= frame_cfg <= 50:
            raise GenError(f"--frame-cfg must be between 0 and 50 (1 = no guidance on the known frames), got {frame_cfg}")
        if frame_cfg != 1 and not self.masked_frames:
            raise GenError(f"--frame-cfg {frame_cfg:g} guides a masked-frame model's known frames; "
                           f"{self.name or 'this model'} reads none (leave it at 1)")
        if self.masked_frames and self.vae is None and known_frames is None and frames > self.window:
            args = dict(steps=steps, sampler=sampler, cfg=cfg, negative=negative, frame_cfg=frame_cfg)
            first = self.generate(prompts, seeds, size=size, frames=self.window, init_image=init_image,
                                  callback=callback, **args)
            return self.extend(prompts, first, seeds, frames, **args)
        shape = self.latent_shape(size, frames)
        x_T = self.noise(seeds, shape)
        if init_image is not None and known_frames is not None:
            raise GenError("give init_image or known_frames, not both (frame 0 is a known frame)")
        known = self.first_frame_known(init_image, size, x_T) if init_image is not None else \
            self.frames_known(known_frames, size, x_T) if known_frames is not None else None
        extra = self.frame_condition(known, x_T)
        x0 = self.denoise(prompts, x_T, steps, sampler, cfg, negative, callback, known=known, extra=extra,
                          inner=self.frame_guidance(frame_cfg, extra) if known is not None and frame_cfg != 1 else None)
        return self.decode(x0).clamp(-1, 1)

    @property
    def window(self) -> int:
        """The frame count the model was trained on: the window of `extend` and `interpolate`."""
        return self.defaults.frames or self.denoiser.config.frames

    def extend(self, prompts: list[str], clips: torch.Tensor, seeds: list[int], frames: int,
               **kwargs) -> torch.Tensor:
        """Continue clips (B, C, T, H, W) in [-1, 1] to `frames` frames: windows of the trained
        frame count whose first half is the clip so far (the `extend` mask), each adding the
        rest; window w draws from window_seeds(seeds, w). Best with a masked-frame model
        trained on the `extend` mask."""
        if clips.dim() != 5 or clips.shape[2] < 1:
            raise GenError(f"extend continues clips (B, C, T, H, W) with at least one frame, got {tuple(clips.shape)}")
        window = self.window
        keep = max(1, window // 2)
        if window < 2:
            raise GenError(f"the model draws {window} frame at a time: it cannot continue a clip")
        out, w = clips, 1
        while out.shape[2] < frames:
            k = min(keep, out.shape[2])
            dense = torch.zeros((*out.shape[:2], window, *out.shape[3:]), dtype=out.dtype, device=out.device)
            dense[:, :, :k] = out[:, :, -k:]
            part = self.generate(prompts, window_seeds(seeds, w), size=out.shape[-1], frames=window,
                                 known_frames=(dense, frame_mask("extend", window, k)), **kwargs)
            out, w = torch.cat([out, part[:, :, k:].to(out.dtype)], dim=2), w + 1
        return out[:, :, :frames]

    @property
    def masked_frames(self) -> bool:
        """Whether the denoiser reads known frames as input (a masked-frame model)."""
        return "frames" in getattr(self.denoiser.config, "concat_keys", ())

    def frame_condition(self, known, x_T: torch.Tensor) -> dict | None:
        """A masked-frame model's `frames` (zero where unknown) and `frame_mask` (B, T)."""
        if not self.masked_frames:
            return None
        b, _, t = x_T.shape[:3]
        if known is None:
            return {"frames": torch.zeros_like(x_T), "frame_mask": torch.zeros(b, t, device=self.device)}
        values, mask = known
        return {"frames": (values * mask).expand_as(x_T).to(x_T.dtype),
                "frame_mask": mask[:, 0, :, 0, 0].expand(b, t).to(x_T.dtype)}

    def frame_guidance(self, scale: float, extra: dict) -> dict:
        """samplers.CFG's inner term for the known frames (InstructPix2Pix's image guidance): the
        prediction is pushed from the one with neither text nor frames towards the one with the
        frames, by `scale`, at the noisier half of the timesteps only, where the clip's layout and
        motion are decided. Animating render frames (`gen eval video --model toy-video-masked
        --init-frames --n 200`, 2026-12-08), scale 3 (cfg 3) kept the object in 91.0% of clips
        against 82.5% without and moved it right in 90.0% against 92.5%; over every timestep:
        92.0% and 87.5%."""
        return {"inner_scale": scale, "inner_from": self.schedule.num_train_timesteps // 2,
                "inner_null": {key: torch.zeros_like(value[:1]) for key, value in extra.items()}}

    def frames_known(self, known_frames, size: int, x_T: torch.Tensor):
        """(values, mask) for the samplers' `known` from (clips, mask) in pixels."""
        import torch.nn.functional as F

        if not (isinstance(known_frames, (tuple, list)) and len(known_frames) == 2
                and all(isinstance(k, torch.Tensor) for k in known_frames)):
            raise GenError("known_frames must be a pair (clips, mask) of tensors")
        if self.vae is not None:
            raise GenError("known frames past the first need a pixel-space video model; with a video VAE, "
                           "give frame 0 as init_image")
        clips, mask = known_frames
        b, c, t = x_T.shape[:3]
        if clips.dim() != 5 or clips.shape[0] not in (1, b) or clips.shape[1] != c or clips.shape[2] != t:
            raise GenError(f"the known clips must be (1 or {b}, {c}, {t}, H, W) for {t} frames, "
                           f"got {tuple(clips.shape)}")
        if mask.dim() == 1:
            mask = mask[None]
        if mask.dim() != 2 or mask.shape[0] not in (1, b) or mask.shape[1] != t:
            raise GenError(f"the frame mask must be ({t},) or ({b}, {t}), got {tuple(mask.shape)}")
        if clips.shape[-2:] != (size, size):
            flat = F.interpolate(clips.transpose(1, 2).flatten(0, 1).float(), size=(size, size), mode="bilinear",
                                 antialias=True, align_corners=False)
            clips = flat.unflatten(0, (clips.shape[0], t)).transpose(1, 2)
        mask = mask.float().clamp(0, 1).round().to(self.device)
        if not mask.any(1).all():
            row = int((~mask.any(1)).nonzero()[0])
            raise GenError(f"the frame mask marks no frame known (row {row}): mark at least one with 1, or give "
                           f"no known_frames to draw the clip from the text alone")
        return clips.float().clamp(-1, 1).to(self.device), mask[:, None, :, None, None]

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
        """(values, mask) for the samplers' `known`: frame 0 is the image, (C, H, W) for every
        clip or (B, C, H, W) one per clip, in [-1, 1], resized to the clip's size (its latent
        with a VAE: the image encoded as a one-frame clip)."""
        import torch.nn.functional as F

        b = x_T.shape[0]
        channels = x_T.shape[1] if self.vae is None else getattr(self.vae, "image_channels", 3)
        if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-3] != channels \
                or (image.dim() == 4 and image.shape[0] not in (1, b)):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise GenError(f"the init image must be a tensor ({channels}, H, W) or (1 or {b}, {channels}, H, W), "
                           f"got {got}")
        image = image if image.dim() == 4 else image[None]
        image = F.interpolate(image.float().clamp(-1, 1), size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False).to(self.device)  # (1 or B, C, S, S)
        first = image if self.vae is None else self.vae.encode(image[:, :, None]).float()[:, :, 0]
        values = torch.zeros((first.shape[0], *x_T.shape[1:]), device=self.device)
        values[:, :, 0] = first
        mask = torch.zeros((1, 1, x_T.shape[2], 1, 1), device=self.device)
        mask[:, :, 0] = 1
        return values, mask

    def interpolate(self, prompts: list[str], clips: torch.Tensor, seeds: list[int], inbetween: str = "model",
                    **kwargs) -> torch.Tensor:
        """Temporal super-resolution: clips (B, C, T, H, W) in [-1, 1] at f fps -> (B, C, 2T, H, W)
        at 2f, the given frames at the even positions, the odd ones new (the last one after the
        last given frame). `inbetween` "model": the model draws every new frame (best with a
        masked-frame model trained on the `interpolate` mask); past the frames it was trained on
        it runs in windows of that many frames, each starting on the last given frame of the
        one before (which ends on a frame drawn after its last given one, redrawn between two
        given ones by the next); window w draws from window_seeds(seeds, w). "motion": each
        frame between two given ones is their motion-compensated middle
        (`motion.bilateral_midframes`), and the model draws only the last one, from the frames
        before it (the `extend` mask)."""
        if inbetween not in INBETWEENS:
            raise GenError(f"inbetween must be one of {', '.join(INBETWEENS)}, got {inbetween!r}")
        t = clips.shape[2]
        dense = torch.zeros((*clips.shape[:2], 2 * t, *clips.shape[3:]), dtype=clips.dtype, device=clips.device)
        dense[:, :, 0::2] = clips
        n = 2 * t
        if inbetween == "motion":
            from gen.pipeline.motion import bilateral_midframes

            if t > 1:
                dense[:, :, 1:-1:2] = bilateral_midframes(clips[:, :, :-1].transpose(1, 2),
                                                          clips[:, :, 1:].transpose(1, 2)).transpose(1, 2)
            window = max(2, min(self.window, n))
            last = self.generate(prompts, seeds, size=clips.shape[-1], frames=window,
                                 known_frames=(dense[:, :, n - window:], frame_mask("extend", window, window - 1)),
                                 **kwargs)
            dense[:, :, -1] = last[:, :, -1].to(dense.dtype)
            return dense
        window = self.window - self.window % 2
        if n <= window or window < 4:
            return self.generate(prompts, seeds, size=clips.shape[-1], frames=n,
                                 known_frames=(dense, frame_mask("interpolate", n)), **kwargs)
        out, start, w = dense.clone(), 0, 0
        while True:
            last = start + window >= n
            start = n - window if last else start
            part = self.generate(prompts, window_seeds(seeds, w), size=clips.shape[-1], frames=window,
                                 known_frames=(dense[:, :, start:start + window], frame_mask("interpolate", window)),
                                 **kwargs).to(out.dtype)
            keep = window if last else window - 1  # a window's last frame has no given frame after it
            out[:, :, start:start + keep] = part[:, :, :keep]
            if last:
                return out
            start, w = start + window - 2, w + 1

    def __call__(self, prompt: str | list[str], n: int = 1, seed: int = 0, **kwargs) -> list[list]:
        """One list of PIL frames per clip (n clips per prompt; clip k of a prompt uses seed + k)."""
        from PIL import Image

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(n)]
        seeds = [seed + k for _ in range(len(prompts) // n) for k in range(n)]
        clips = self.generate(prompts, seeds, **kwargs)
        return [[Image.fromarray(f) for f in frames] for frames in clips_to_uint8(clips)]


FRAME_MASKS = ("animate", "interpolate", "extend", "none")
INBETWEENS = ("model", "motion")  # how VideoPipeline.interpolate makes the frames between given ones


def window_seeds(seeds: list[int], window: int) -> list[int]:
    """The noise seeds of window `window` of a clip drawn in windows: the clip's own seeds
    for the first, then seeds derived from them (so windows do not repeat one noise)."""
    return list(seeds) if window == 0 else [(s + 1_000_003 * window) % 2**63 for s in seeds]


def frame_mask(kind: str, frames: int, known: int | None = None) -> torch.Tensor:
    """(frames,) of 0 and 1, 1 where a frame is known: `animate` frame 0 (image to video),
    `interpolate` every other frame from 0 (temporal super-resolution), `extend` the first
    `known` frames (default half: continuing a clip), `none` no frame (text to video)."""
    mask = torch.zeros(frames)
    if kind == "animate":
        mask[0] = 1
    elif kind == "interpolate":
        mask[0::2] = 1
    elif kind == "extend":
        k = frames // 2 if known is None else known
        if not 1 <= k < frames:
            raise GenError(f"extend keeps between 1 and {frames - 1} of {frames} frames, got {k}")
        mask[:k] = 1
    elif kind != "none":
        raise GenError(f"frame mask kind must be one of {', '.join(FRAME_MASKS)}, got {kind!r}")
    return mask


def random_frame_masks(kinds: tuple[str, ...], batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, frames) training masks: each row one of `kinds` drawn uniformly (an `extend`
    row keeps a uniform 1..frames-1 first frames), drawn from `generator`."""
    rows = []
    for _ in range(batch):
        kind = kinds[int(torch.randint(0, len(kinds), (), generator=generator))]
        known = int(torch.randint(1, frames, (), generator=generator)) if kind == "extend" and frames > 1 else None
        rows.append(frame_mask("none" if kind == "extend" and frames == 1 else kind, frames, known))
    return torch.stack(rows)


def clips_to_uint8(clips: torch.Tensor) -> np.ndarray:
    """(B, C, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3)."""
    b, c, t, h, w = clips.shape
    frames = to_uint8(clips.transpose(1, 2).reshape(b * t, c, h, w))
    return frames.reshape(b, t, h, w, 3)

