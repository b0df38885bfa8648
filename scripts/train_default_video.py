"""Recipe for toy-video-dit, the former text-to-video default (a motion module; the shipped
default is now toy-video-cascade, from scripts/train_video_cascade.py, and toy-video-dit no
longer ships: --ship installs it again).

    python scripts/train_default_video.py --out runs/default-video [--minutes 6] [--device cuda]
    python scripts/eval_toy_video.py --model runs/default-video/pipeline --json runs/eval.json
    python scripts/eval_toy_video.py --result runs/eval.json --run runs/default-video \
        --card runs/default-video/pipeline/README.md                 # write the card
    python scripts/train_default_video.py --ship runs/default-video/pipeline

A motion module on the shipped image model (AnimateDiff's recipe, in DiT form): the
video DiT is the shipped `toy-image-dit-ft` denoiser with a temporal transformer block after
each spatial one (Latte's factorised attention, each reading the text tokens too), all
temporal blocks starting at the identity. The image model and its text encoder stay
frozen; only the temporal blocks train, on toy clips of 8 frames at 4 fps (2 s) at
32x32 pixels, v-prediction on the image model's cosine schedule. Shipping stores only the
temporal blocks and names the image model as the base (`Pipeline.save_pretrained(base=)`),
so the default video model costs ~9 MB on top of the image one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "toy-video-dit"
BASE = "toy-image-dit-ft"

RECIPE = dict(
    kind="video", data="toy-video", data_n=2_000_000, size=32, frames=8, fps=4.0, channels=3,
    init=BASE, freeze_spatial=True,
    model_overrides={"temporal_mlp_ratio": 1.0, "temporal_cross_attention": True},
    schedule={"beta_schedule": "cosine", "prediction": "v"},
    loss_weighting="min_snr", min_snr_gamma=5.0, lr=1e-3, warmup=200, lr_schedule="constant",
    weight_decay=0.0, grad_clip=1.0, ema_decay=0.998, cond_drop=0.1, bf16=True,
    sample_prompts=("a red ball rolling left", "a blue car moving right", "a green star spinning",
                    "a yellow cat bouncing", "a purple fish moving up", "a white house getting bigger"),
    sample_steps=25, sample_cfg=3.0,
)


def ship(pipeline: Path) -> Path:
    """Copy a trained pipeline into the package as the video default: float16, stored as
    its difference from the shipped image model (the temporal blocks)."""
    from gen.pipeline import install

    return install(pipeline, NAME, base=BASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/default-video")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget for training")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ckpt-every", type=int, default=1000)
    parser.add_argument("--sample-every", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init", default=None,
                        help="continue from this video pipeline (a later stage) instead of the image model")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    parser.add_argument("--weighting", choices=("min_snr", "uniform"), default=None,
                        help="loss weighting over noise levels (default: the recipe's)")
    parser.add_argument("--temporal-mode", choices=("position", "clip"), default=None,
                        help="what a temporal block attends over (default: the recipe's, position)")
    parser.add_argument("--temporal-conv", type=int, default=None,
                        help="add a space-time conv motion path of this many channels after each temporal block")
    parser.add_argument("--frame-masks", default=None,
                        help="a masked-frame model (issue 17): comma-separated mask kinds to train on, e.g. "
                             "animate,interpolate,extend (known frames and a mask become inputs)")
    parser.add_argument("--known-noise", type=float, default=None, help="with --frame-masks: noise on known frames")
    parser.add_argument("--size", type=int, default=None, help="clip side in pixels (default 32)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default 8)")
    parser.add_argument("--fps", type=float, default=None, help="frames per second (default 4)")
    parser.add_argument("--train-spatial", action="store_true", help="train the image layers too (not frozen)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser (the fast trainer)")
    parser.add_argument("--ship", type=Path, default=None, help="copy this trained pipeline into gen/weights")
    args = parser.parse_args()
    if args.ship:
        print(ship(args.ship))
        return
    from gen.train import TrainConfig, train

    recipe = dict(RECIPE)
    if args.init:
        recipe.update(init=args.init, warmup=50)
    if args.lr:
        recipe.update(lr=args.lr)
    if args.weighting:
        recipe.update(loss_weighting=args.weighting)
    if args.temporal_mode:
        recipe.update(model_overrides={**recipe["model_overrides"], "temporal_mode": args.temporal_mode})
    if args.temporal_conv is not None:
        recipe.update(model_overrides={**recipe["model_overrides"], "temporal_conv": args.temporal_conv})
    if args.frame_masks:
        recipe.update(frame_masks=tuple(k.strip() for k in args.frame_masks.split(",") if k.strip()))
    for name in ("known_noise", "size", "frames", "fps"):
        if getattr(args, name) is not None:
            recipe[name] = getattr(args, name)
    if args.train_spatial:
        recipe.update(freeze_spatial=False)
    cfg = TrainConfig(out=args.out, steps=args.steps, batch=args.batch, workers=args.workers,
                      max_minutes=args.minutes, ckpt_every=args.ckpt_every, sample_every=args.sample_every,
                      compile=args.compile, log_every=50, **recipe)
    print(train(cfg, resume=args.resume, device=args.device))


if __name__ == "__main__":
    main()
