"""Recipe for the video cascade's image stage (issue 17): frame 0 of the clip a caption asks for.

    python scripts/train_frame0.py --out runs/frame0 [--minutes 28] [--resume]
    python scripts/train_frame0.py --ship runs/frame0/lora    # toy-frame0-dit, and the cascade uses it

The video stage animates frame 0, and it learned to from the toy clips' first frames: a
small object placed where its motion starts (low for "moving up", small for "getting
bigger", at the left edge for "moving right"). The shipped text-to-image model draws toy
*images* instead (a large object in the middle), which the video stage moves the wrong
way or not at all: with them as frame 0 the base clip's motion was right in 69% of 96
fresh prompts, against 93% from the renders' own frame 0 (`toy-video-masked`, 8 frames
at 4 fps, 32x32). So the image model is fine-tuned on frame 0 of toy clips with the clips'
captions (`toy-frame0` data), through LoRA adapters of rank 32 on its denoiser (peft; the
text encoder stays frozen), and ships as the difference from the shipped image model:
each adapted matrix as the two rank-32 factors of its change (`save_pretrained(base=...,
rank=...)`), a few MB instead of a second copy of the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "toy-frame0-dit"
BASE = "toy-image-dit-ft"
CASCADE = "toy-video-cascade"
RANK = 32
# the cascade's sampling settings for its stages, by measurement (96 fresh prompts, base clips at 4 fps):
# frame 0 at cfg 2 (motion 82%, all right 74%; cfg 1: 81% / 70%; cfg 3: 76% / 68%); temporal SR by
# motion-compensated in-betweens (+4.9 dB over the linear blend on 200 render clips, flicker 1.08x the
# renders' at the cascade's output), the model drawing the last frame at cfg 1 (half the cost of cfg 3)
STAGE_DEFAULTS = {"image": {"cfg": 2.0}, "temporal": {"cfg": 1.0, "inbetween": "motion"}}

RECIPE = dict(
    kind="image", data="toy-frame0", data_n=100_000, size=32, channels=3, init=BASE, lora_rank=RANK,
    schedule={"beta_schedule": "cosine", "prediction": "v"},
    loss_weighting="min_snr", min_snr_gamma=5.0, lr=1e-3, warmup=100, lr_schedule="constant",
    weight_decay=0.0, grad_clip=1.0, ema_decay=0.999, cond_drop=0.1, bf16=True,
)


def ship(adapter: Path) -> Path:
    """Merge the adapters into the shipped image model, store it as its low-rank difference
    from that model (float16), and make the shipped video cascade draw frame 0 with it (the
    card, README.md beside it, is written from the measurements)."""
    import torch

    from gen.pipeline import Pipeline, VideoCascade, weights
    from gen.pipeline.lora import load_lora

    pipe = load_lora(Pipeline.from_pretrained(BASE), adapter, merge=True)
    target = pipe.save_pretrained(weights.WEIGHTS_DIR / NAME, overwrite=True, dtype=torch.float16, base=BASE,
                                  rank=RANK)
    cascade = VideoCascade.from_pretrained(CASCADE)
    cascade.image = Pipeline.from_pretrained(NAME)
    for role, settings in STAGE_DEFAULTS.items():
        cascade.set_stage_defaults(role, **settings)
    cascade.save_pretrained(weights.WEIGHTS_DIR / CASCADE, overwrite=True, shipped=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/frame0")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=28.0, help="wall-clock budget for training")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ckpt-every", type=int, default=200)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="eager (the default compiles the denoiser)")
    parser.add_argument("--ship", type=Path, default=None, help="merge this run's lora/ folder and ship it")
    args = parser.parse_args()
    if args.ship:
        print(ship(args.ship))
        return
    from gen.train import TrainConfig, train

    cfg = TrainConfig(out=args.out, steps=args.steps, batch=args.batch, workers=args.workers,
                      max_minutes=args.minutes, ckpt_every=args.ckpt_every, sample_every=0,
                      compile=not args.no_compile, log_every=20, **RECIPE)
    print(train(cfg, resume=args.resume, device=args.device))


if __name__ == "__main__":
    main()
