"""Measure a super-resolution stage the way its card reports it (issue 16's figures).

    python scripts/eval_sr.py --model runs/default-sr/pipeline --baseline runs/sr-regression/pipeline \
        [--n 500] [--levels 0,0.1,0.2,0.3,0.5] [--level-n 100] [--base toy-image-dit] [--json out.json]

1. On n fresh toy renders at 128x128 (toy-world seed 999, never a training seed),
   box-downsampled to 32x32: PSNR, SSIM and edge energy (relative to the truth's) of the
   stage at its default settings, of bicubic upsampling, and of `--baseline` (SR3's
   regression U-Net of the same size trained for the same wall time).
2. The augmentation level, on true low-res renders: the same figures at each of `--levels`
   on the first `--level-n` renders.
3. The augmentation level, on the base model's own 32x32 samples (the input the stage gets
   in the cascade, artefacts included): there is no true 128x128 image, so per level the
   table gives consistency (PSNR of the output box-downsampled back against the sample),
   edge energy relative to the renders of the same captions at 128, and the prompt accuracy
   the toy judges read from the output, beside the base samples' own.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def renders_table(stage, levels: list[float], n: int, steps=None) -> list[dict]:
    from gen.evaluate import evaluate_sr

    rows = []
    for level in levels:
        r = evaluate_sr(stage, n=n, steps=steps, sr_noise=level)
        rows.append({"sr_noise": level, **r["sr"], "seconds_per_image": r["seconds_per_image"]})
    return rows


def base_table(base, stage, levels: list[float], n: int, batch: int = 25, steps=None) -> dict:
    from gen.evaluate import (edge_energy, generate, image_prompts, judge_images, prompt_targets, to_images)
    from gen.pipeline import WEIGHTS_DIR
    from gen.pipeline.superres import box_downsample
    from metrics.scene_judge import SceneJudge
    from metrics.toy_judge import ImageJudge

    judge = ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image")
    scene = SceneJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-scene")
    scale = stage.defaults.scale
    prompts, renders = image_prompts(n, base.defaults.size * scale)
    truth_edges = edge_energy((to_images(renders).double() + 1) / 2).mean().item()
    targets = prompt_targets(prompts, judge, scene)
    low, _ = generate(base, prompts, None, None, None, batch)
    base_report, _ = judge_images(low, targets, judge, scene)
    rows = []
    for level in levels:
        start, outs = time.perf_counter(), []
        for i in range(0, n, batch):
            outs.append(stage.upscale(low[i:i + batch], list(range(i, min(i + batch, n))), steps=steps,
                                      sr_noise=level).cpu())
        seconds = (time.perf_counter() - start) / n
        high = torch.cat(outs)
        back = box_downsample(high, scale)
        mse = ((back.double() - low.double()) / 2).pow(2).flatten(1).mean(1)
        report, _ = judge_images(high, targets, judge, scene)
        rows.append({"sr_noise": level, "consistency_psnr": (-10 * torch.log10(mse.clamp_min(1e-12))).mean().item(),
                     "edge_energy": edge_energy((high.double() + 1) / 2).mean().item() / truth_edges,
                     "all": report["all"], "accuracy": {k: v for k, v in report.items() if k != "n"},
                     "seconds_per_image": seconds})
    return {"n": n, "base_accuracy": {k: v for k, v in base_report.items() if k != "n"},
            "base_edge_energy": edge_energy((low.double() + 1) / 2).mean().item(), "rows": rows}


def markdown(result: dict) -> str:
    m, lines = result["main"], []
    lines += [f"On {m['n']} fresh toy renders at {m['size']}x{m['size']} (toy-world seed {m['seed']}), box-downsampled "
              f"{m['scale']}x; the stage at {m['steps']} steps, sr-noise {m['sr_noise']}:", "",
              "| method | PSNR (dB) | SSIM | edge energy / truth's |", "|---|---|---|---|"]
    for name, r in [("bicubic", m["bicubic"]), ("this stage (diffusion)", m["sr"])] + (
            [("regression U-Net, same size and wall time", result["baseline"]["sr"])] if result.get("baseline")
            else []):
        lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['edge_energy']:.2f} |")
    lines += ["", f"Sampling: {m['seconds_per_image']:.3f} s per 128x128 image (batch 16, this machine).", ""]
    if result.get("levels_renders"):
        lines += [f"Augmentation level on true low-res renders (first {result['level_n']}):", "",
                  "| sr-noise | PSNR (dB) | SSIM | edge energy |", "|---|---|---|---|"]
        lines += [f"| {r['sr_noise']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['edge_energy']:.2f} |"
                  for r in result["levels_renders"]]
        lines.append("")
    if result.get("levels_base"):
        b = result["levels_base"]
        lines += [f"Augmentation level on the base model's own samples ({b['n']} fresh prompts; base alone: "
                  f"all-right {b['base_accuracy']['all']:.1%}):", "",
                  "| sr-noise | consistency PSNR (dB) | edge energy / renders' | all-right |", "|---|---|---|---|"]
        lines += [f"| {r['sr_noise']} | {r['consistency_psnr']:.2f} | {r['edge_energy']:.2f} | {r['all']:.1%} |"
                  for r in b["rows"]]
        lines.append("")
    return "\n".join(lines)


def write_card(path: Path, run: Path, result: dict, name: str = "toy-sr-4x") -> None:
    """The stage's model card: recipe from the run's config and log, then the measured tables."""
    config = json.loads((run / "config.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps, every = log[-1]["step"], config.get("log_every", 50)
    minutes = sum(every / r["steps_per_s"] for r in log) / 60
    m = result["main"]
    card = f"""# {name} (the cascade's super-resolution stage, `gen upscale`)

A 4x super-resolution diffusion stage: 32x32 pixels in, 128x128 out, run after the
text-to-image base by the shipped cascade (`gen image` at its default size). The
fully convolutional {config['model']} U-Net (no attention, no text) sees the upsampled
low-resolution image concatenated to x_t and the embedded augmentation level.
Weights stored in float16.

## Recipe

`python scripts/train_default_sr.py --minutes {config['max_minutes']:g} --threads {config.get('threads')} \
--workers {config['workers']}` on the 2-core CPU, beside the regression baseline (one core each):

- data: `toy` renders at {config['size']}x{config['size']} (gen.toyworld, seed {config['seed']}; every
  image new), a random {config['crop']}x{config['crop']} crop of each, box-downsampled {config['scale']}x to
  its low-resolution input
- noise-conditioning augmentation: the input noised by the forward process at a level drawn
  uniformly from [0, {config.get('sr_aug_max', 1.0):g}] of the schedule, which the model is told; sampled at
  sr-noise {m['sr_noise']} by default
- {config['schedule']['prediction']}-prediction, {config['schedule']['beta_schedule']} schedule,
  {config['loss_weighting']} weighting; AdamW lr {config['lr']} (warm-up {config['warmup']} steps),
  grad clip {config['grad_clip']}, EMA {config['ema_decay']} (the shipped weights), bf16 autocast, channels_last
- {steps:,} steps x batch {config['batch']} = {steps * config['batch']:,} crops in {minutes:.1f} min of training
  (final loss {log[-1]['loss']:.4f})

## Measured

`python scripts/eval_sr.py --model {name} --baseline RUN/pipeline --n {m['n']}`:

{markdown(result)}
"""
    path.write_text(card)


def main() -> None:
    from gen.evaluate import evaluate_sr
    from gen.pipeline import Pipeline, SuperResolution

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the SR stage folder (or shipped name)")
    parser.add_argument("--baseline", default=None, help="a regression stage trained for the same wall time")
    parser.add_argument("--base", default="toy-image-dit", help="the text-to-image base whose samples it upscales")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--levels", default="0,0.1,0.2,0.3,0.5")
    parser.add_argument("--level-n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--run", type=Path, help="the training run folder (config.json, log.jsonl) for --card")
    parser.add_argument("--card", type=Path, help="write the model card here")
    args = parser.parse_args()
    stage = SuperResolution.from_pretrained(args.model)
    levels = [float(x) for x in args.levels.split(",") if x]
    result = {"model": args.model, "main": evaluate_sr(stage, n=args.n, steps=args.steps), "level_n": args.level_n}
    print(json.dumps({k: result["main"][k] for k in ("sr", "bicubic", "seconds_per_image")}), flush=True)
    if args.baseline:
        result["baseline"] = evaluate_sr(SuperResolution.from_pretrained(args.baseline), n=args.n)
        print(json.dumps({"baseline": result["baseline"]["sr"]}), flush=True)
    if levels:
        result["levels_renders"] = renders_table(stage, levels, args.level_n, args.steps)
        result["levels_base"] = base_table(Pipeline.from_pretrained(args.base), stage, levels, args.level_n,
                                           steps=args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(markdown(result))
    if args.card:
        write_card(args.card, args.run, result)
        print(f"wrote {args.card}")


if __name__ == "__main__":
    main()
