"""Recipe for the shipped toy VAE (`gen/weights/toy-vae`, factor 4, 4 latent channels).

    python scripts/train_default_vae.py --out runs/toy-vae [--minutes 2.5] [--device cuda]
    python scripts/train_default_vae.py --out runs/toy-vae-ft --init runs/toy-vae/vae --lr 2e-4 \
        --warmup 50 --batch 16 --seed 1 --minutes 22 --device cpu        # the second stage
    python scripts/train_default_vae.py --ship runs/toy-vae/vae      # copy into gen/weights (fp16)
    gen eval vae --model runs/toy-vae/vae                             # PSNR on fresh toy images

diffusers' AutoencoderKL with block widths (64, 128, 128), one resnet per block (3.8M
parameters), on 64x64 toy images (every image new), L1 reconstruction + 1e-6 KL, AdamW
5e-4 with warm-up, EMA 0.999. The latent scale and shift are measured on training
images at export, so latents have zero mean and unit variance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "toy-vae"
RECIPE = dict(kind="vae", data="toy", data_n=2_000_000, size=64, channels=3,
              vae_config={"factor": 4, "latent_channels": 4, "channels": (64, 128, 128), "layers_per_block": 1},
              recon_loss="l1", kl_weight=1e-6, lr=5e-4, warmup=200, lr_schedule="constant", ema_decay=0.999,
              grad_clip=1.0, bf16=True)


def ship(folder: Path) -> Path:
    import torch

    import models
    from gen.pipeline import WEIGHTS_DIR

    vae = models.load_pretrained(folder)
    return vae.save_pretrained(WEIGHTS_DIR / NAME, overwrite=True, dtype=torch.float16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/toy-vae")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init", default=None, help="start from this VAE folder (a second stage)")
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--warmup", type=int, default=RECIPE["warmup"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", default=None, help="only toy scenes of this kind (e.g. wearing: small hats)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ship", type=Path, default=None, help="copy this trained VAE folder into gen/weights")
    args = parser.parse_args()
    if args.ship:
        print(ship(args.ship))
        return
    from gen.train import TrainConfig, train

    recipe = {**RECIPE, "lr": args.lr, "warmup": args.warmup, "init": args.init, "seed": args.seed,
              "data_kind": args.kind}
    cfg = TrainConfig(out=args.out, steps=args.steps, batch=args.batch, workers=args.workers,
                      max_minutes=args.minutes, ckpt_every=1_000_000, sample_every=0, log_every=25, **recipe)
    print(train(cfg, resume=args.resume, device=args.device))


if __name__ == "__main__":
    main()
