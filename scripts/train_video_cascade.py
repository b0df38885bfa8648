"""Recipe for the shipped video cascade (issue 17): text -> image -> video -> 2x frames -> 4x pixels.

    python scripts/train_video_cascade.py --out runs/video-masked [--minutes 85] [--resume]
    python scripts/train_video_cascade.py --ship runs/video-masked/pipeline   # + the cascade folder

The hard stage is small: one masked-frame video DiT (MCVD; Make-A-Video's interpolation
network) trained from scratch on toy clips of 8 frames at 4 fps, 32x32 pixels, patch 4
(64 tokens a frame, 512 a clip), full space-time attention with 64-wide heads, reading the
frozen text encoder of the shipped image model. Each training clip gets one random frame
mask (animate: frame 0 known; interpolate: every other frame; extend: the first k; none);
interpolate-mask clips are drawn at 8 fps (the 4 -> 8 fps step of temporal SR), the others
at 4 fps; the known frames get a little noise (against conditional image leakage), and the
model sees every unknown frame as the blend of its known neighbours (`fill_frames`):
it learns to move a still, not to draw one. v-prediction on a zero-terminal-SNR cosine
schedule (Emu Video). The same weights animate frame 0 from the image model, double the
frame rate (interpolate) and extend clips; the shipped 4x super-resolution stage enlarges
every frame (one deterministic pass, the same for every frame: nothing to flicker).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "toy-video-masked"
CASCADE = "toy-video-cascade"
IMAGE = "toy-image-dit-ft"
SR = "toy-sr-4x"

RECIPE = dict(
    kind="video", data="toy-video", data_n=2_000_000, size=32, frames=8, fps=4.0, channels=3,
    model="dit-xs/2",
    model_overrides={"video": True, "frames": 8, "patch_size": 4, "hidden_size": 192, "depth": 6, "num_heads": 3,
                     "attention": "full"},
    text_encoder_from=IMAGE,
    frame_masks=("animate", "animate", "animate", "interpolate", "interpolate", "extend", "none"),
    known_noise=0.1, dense_interpolate=True,
    schedule={"beta_schedule": "cosine", "prediction": "v", "zero_terminal_snr": True},
    loss_weighting="min_snr", min_snr_gamma=5.0, lr=6e-4, warmup=200, lr_schedule="constant",
    weight_decay=0.0, grad_clip=1.0, ema_decay=0.998, cond_drop=0.1, bf16=True,
    sample_prompts=("a red ball rolling left", "a blue car moving right", "a green star spinning",
                    "a yellow cat bouncing", "a purple fish moving up", "a white house getting bigger"),
    sample_steps=25, sample_cfg=3.0,
)


def ship(pipeline: Path) -> Path:
    """Copy the trained video model into the package (float16; its text encoder stored as
    the shipped image model's, not copied) and write the cascade that uses it: the shipped
    image model draws frame 0, the video model animates it and doubles its frame rate, the
    shipped 4x stage enlarges every frame. The cascade becomes the shipped video default;
    `scripts/train_frame0.py --ship` then gives it the image stage trained on clips' first frames."""
    from gen.pipeline import Pipeline, SuperResolution, VideoCascade, VideoPipeline, install, weights

    install(pipeline, NAME, base=IMAGE)
    video = VideoPipeline.from_pretrained(NAME)
    cascade = VideoCascade(Pipeline.from_pretrained(IMAGE), video, temporal=video,
                           spatial=[SuperResolution.from_pretrained(SR)], name=CASCADE)
    target = cascade.save_pretrained(weights.WEIGHTS_DIR / CASCADE, overwrite=True, shipped=True)
    (weights.WEIGHTS_DIR / weights.DEFAULT_FILES["video"]).write_text(CASCADE + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/video-masked")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget for training")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ckpt-every", type=int, default=400)
    parser.add_argument("--snapshot-every", type=int, default=800, help="EMA exports for the learning curve")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="eager (the default compiles the denoiser)")
    parser.add_argument("--ship", type=Path, default=None, help="copy this trained pipeline into gen/weights")
    args = parser.parse_args()
    if args.ship:
        print(ship(args.ship))
        return
    from gen.train import TrainConfig, train

    cfg = TrainConfig(out=args.out, steps=args.steps, batch=args.batch, workers=args.workers,
                      max_minutes=args.minutes, ckpt_every=args.ckpt_every, snapshot_every=args.snapshot_every,
                      sample_every=0, compile=not args.no_compile, log_every=50, **RECIPE)
    print(train(cfg, resume=args.resume, device=args.device))


if __name__ == "__main__":
    main()
