"""Recipe for the shipped super-resolution stage (32 -> 128 pixels, `gen upscale`, the cascade's
second stage), and the ones it was measured against at the same budget.

    python scripts/train_default_sr.py --out runs/sr --minutes 60 --threads 1 --workers 0   # the shipped stage
    python scripts/train_default_sr.py --diffusion --out runs/sr-diffusion   # the diffusion stage compared
    python scripts/train_default_sr.py --augment --out runs/sr-augment       # with noise-conditioning augmentation
    python scripts/eval_sr.py --model runs/sr/pipeline ...                   # figures for the card
    python scripts/train_default_sr.py --ship runs/sr/pipeline               # into gen/weights, DEFAULT a cascade

Data (DESIGN.md's cascade): toy-world renders at 128x128, random 64x64 crops box-downsampled
4x to 16x16 inputs; the fully convolutional sr-unet-s (3.8M parameters, no attention);
AdamW, EMA, bf16. The shipped stage is SR3's regression model: the image predicted from the
low-res input in one pass (MSE). Its card (gen/weights/toy-sr-4x/README.md) has the
comparison: at the same budget (60 min of one core, about 860 steps of batch 32) it reached
32.7 dB on fresh renders against bicubic's 24.5, the x0 diffusion stage (`--diffusion`)
21.7 and the first recipe's v-prediction stage 19.3; the regression model trained under
noise-conditioning augmentation (`--augment`, levels in [0, 0.5]) 28.1 at level 0 and no
gain on the base model's samples. Training stops at --steps or after --minutes; `--resume`
continues the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "toy-sr-4x"
BASE, CASCADE = "toy-image-dit-ft", "toy-cascade"  # the shipped default: the image base, then this stage

RECIPE = dict(
    kind="sr", data="toy", data_n=2_000_000, size=128, crop=64, scale=4, channels=3, model="sr-unet-s",
    schedule={"beta_schedule": "cosine", "prediction": "x0"}, sr_regression=True, sr_aug_max=0.0, sr_noise=0.0,
    lr=1e-3, warmup=200, lr_schedule="constant", weight_decay=0.0, grad_clip=1.0, ema_decay=0.999, bf16=True,
)
DIFFUSION = dict(sr_regression=False, loss_weighting="uniform", sample_steps=10, sr_aug_max=0.5, sr_noise=0.2)
AUGMENT = dict(sr_aug_max=0.5, sr_noise=0.1)


def ship(stage: Path, sr_noise: float | None = None) -> Path:
    """Copy a trained stage into the package as the default SR stage (weights in float16,
    its card beside them), and make the shipped default a cascade of the image base and it:
    a folder that names both shipped stages (gen/weights/toy-cascade) and copies neither."""
    from gen.pipeline import Cascade, Pipeline, SuperResolution, install, weights

    install(stage, NAME, defaults=None if sr_noise is None else {"sr_noise": sr_noise})
    cascade = Cascade(Pipeline.from_pretrained(BASE), [SuperResolution.from_pretrained(NAME)], name=CASCADE)
    # the base at DPM-Solver++ 12 steps: 77.5% all-right at 128x128 on 200 fresh prompts (DDIM 25: 77.0%), half the time
    cascade.set_base_defaults(sampler="dpm++2m", steps=12)
    target = cascade.save_pretrained(weights.WEIGHTS_DIR / CASCADE, overwrite=True, shipped=True)
    (weights.WEIGHTS_DIR / weights.DEFAULT_FILES["image"]).write_text(CASCADE + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/default-sr")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget for training")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ckpt-every", type=int, default=500)
    parser.add_argument("--sample-every", type=int, default=1000)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--diffusion", action="store_true",
                        help="train the x0 diffusion stage instead (for the comparison)")
    parser.add_argument("--augment", action="store_true",
                        help="the regression model under noise-conditioning augmentation (for the comparison)")
    parser.add_argument("--ship", type=Path, default=None, help="copy this trained stage into gen/weights")
    parser.add_argument("--sr-noise", type=float, default=None, help="with --ship: the stage's default level")
    args = parser.parse_args()
    if args.ship:
        print(ship(args.ship, args.sr_noise))
        return
    from gen.train import TrainConfig, train

    cfg = TrainConfig(out=args.out, steps=args.steps, batch=args.batch, workers=args.workers,
                      max_minutes=args.minutes, ckpt_every=args.ckpt_every, sample_every=args.sample_every,
                      threads=args.threads, log_every=50,
                      **{**RECIPE, **(DIFFUSION if args.diffusion else {}), **(AUGMENT if args.augment else {})})
    print(train(cfg, resume=args.resume, device=args.device))


if __name__ == "__main__":
    main()
