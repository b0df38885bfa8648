"""Prompt accuracy of a text-to-image model on the toy world, measured by the shipped judge.

    python scripts/eval_toy_image.py [--model default] [--n 200] [--steps S] [--sampler M] [--cfg W]
    python scripts/eval_toy_image.py --run runs/gpu-v1 --card gen/weights/toy-image-dit/README.md

Prompts are fresh captions of the toy grammar (seed 999, never a training caption's
index): half single objects ("a small red cat"), half wearers in hats ("a dog wearing a
blue hat"). Each prompt is drawn once at the model's default settings (image i: seed i),
and the judge (gen/weights/toy-judge-image) checks the object, its colour where the
prompt names one, the hat and the hat's colour. The same judge on the renders of those
captions gives the ceiling. `--card` writes the model card from the run's config and log.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

JUDGE = Path(__file__).resolve().parents[1] / "gen" / "weights" / "toy-judge-image"


def prompts_and_renders(n: int, size: int, seed: int = 999):
    from gen.toyworld import toy_image

    samples = [toy_image(i, size, seed=seed, kind="single" if i % 2 == 0 else "wearing") for i in range(n)]
    return [s.caption for s in samples], np.stack([s.pixels for s in samples])


def evaluate(model: str, n: int, steps=None, sampler=None, cfg=None, batch: int = 25, device: str = "cpu") -> dict:
    from gen.pipeline import Pipeline
    from metrics.toy_judge import ImageJudge, judge_prompts, parse_caption

    pipe = Pipeline.from_pretrained(model, device=device)
    judge = ImageJudge.from_pretrained(JUDGE, device=device)
    prompts, renders = prompts_and_renders(n, pipe.defaults.size)
    targets = [parse_caption(p, judge.classes, judge.colors) for p in prompts]
    start = time.perf_counter()
    images = torch.cat([pipe.generate(prompts[i:i + batch], list(range(i, min(i + batch, n))), steps=steps,
                                      sampler=sampler, cfg=cfg) for i in range(0, n, batch)])
    seconds = time.perf_counter() - start
    real = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1
    report = {k: v for k, v in judge_prompts(judge, images, targets).items() if k != "per_image"}
    ceiling = {k: v for k, v in judge_prompts(judge, real, targets).items() if k not in ("per_image", "n")}
    d = pipe.defaults
    return {"model": model, "n": n, "steps": steps or d.steps, "sampler": sampler or d.sampler,
            "cfg": d.cfg if cfg is None else cfg, "generated": report, "renders": ceiling,
            "seconds_per_image": seconds / n}


def write_card(path: Path, run: Path, result: dict) -> None:
    config = json.loads((run / "config.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = log[-1]["step"]
    seconds = sum(50 / r["steps_per_s"] for r in log)  # logged every 50 steps
    g, r = result["generated"], result["renders"]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    card = f"""# toy-image-dit (the `gen image` default)

Text-to-image on the toy world at 32x32 pixels: a DiT-XS/2 denoiser (hidden 192, depth
8, 6 heads, 2x2 patches, adaLN-Zero + cross-attention; 6.7M parameters) and a tiny
open_clip text tower (2 layers, width 128, BPE vocabulary folded to 4,096 rows; 0.9M),
trained together from scratch. Weights stored in float16 (15 MB).

## Recipe

`scripts/device_train.sh image 6.0 512 12 cuda` (one H200, 12 data workers) running
`scripts/train_default_image.py --batch {config['batch']} --minutes {config['max_minutes']}`:

- data: `toy` images at {config['size']}x{config['size']} (gen.toyworld, seed {config['seed']},
  {config['data_n']:,} distinct samples: every training image was new), captions from its grammar
- v-prediction, cosine schedule (1,000 steps), min-SNR-5 weighting, 10% text dropout
- AdamW lr {config['lr']} (warm-up {config['warmup']} steps, then constant), betas (0.9, 0.99),
  grad clip {config['grad_clip']}, EMA {config['ema_decay']} (the shipped weights), bf16 autocast
- {steps:,} steps x batch {config['batch']} = {steps * config['batch']:,} samples in {seconds / 60:.1f} min
  of training (the final loss {log[-1]['loss']:.4f})

## Measured quality

`python scripts/eval_toy_image.py --n {result['n']}`: {result['n']} fresh grammar prompts (half single
objects, half wearers in hats), one image each at the defaults ({result['sampler']}, {result['steps']} steps,
cfg {result['cfg']}), read by the shipped toy-world judge (`gen/weights/toy-judge-image`):

| attribute | generated | renders of the same captions (judge ceiling) |
| --- | ---: | ---: |
| object | {pct(g['object'])} | {pct(r['object'])} |
| colour (where named, n={g['n']['color']}) | {pct(g['color'])} | {pct(r['color'])} |
| hat / no hat | {pct(g['hat'])} | {pct(r['hat'])} |
| hat colour (where named, n={g['n']['hat_color']}) | {pct(g['hat_color'])} | {pct(r['hat_color'])} |
| everything asked right | {pct(g['all'])} | {pct(r['all'])} |

Sampling took {result['seconds_per_image']:.2f} s per image on the 2-core CPU (batches of 25).

## Limits

Only the toy world: twelve objects, eleven colours, hats, simple relations and counts
at 32x32. Relations and counts are not measured by this judge; grids of them are in the
run's samples.
"""
    path.write_text(card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--batch", type=int, default=25, help="prompts per sampling call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    parser.add_argument("--run", type=Path, help="the training run folder (config.json, log.jsonl) for --card")
    parser.add_argument("--card", type=Path, help="write the model card here")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = evaluate(args.model, args.n, args.steps, args.sampler, args.cfg, args.batch, args.device)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.card:
        write_card(args.card, args.run, result)
        print(f"wrote {args.card}")


if __name__ == "__main__":
    main()
