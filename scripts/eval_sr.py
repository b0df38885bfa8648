"""Measure a super-resolution stage the way its card reports it (issue 16's figures).

    python scripts/eval_sr.py --model runs/sr/pipeline --compare "diffusion stage=runs/sr-diffusion/pipeline" \
        [--n 500] [--levels 0,0.1,0.2,0.3,0.5] [--level-n 100] [--base toy-image-dit-ft] [--json out.json]

1. On n fresh toy renders at 128x128 (toy-world seed 999, never a training seed),
   box-downsampled to 32x32: PSNR, SSIM and edge energy (relative to the truth's) of the
   stage at its default settings, of bicubic upsampling, and of each `--compare` stage (e.g.
   SR3's comparison: a regression and a diffusion U-Net of the same size and wall time).
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
              f"{m['scale']}x; the stage ({result.get('kind')}) at sr-noise {m['sr_noise']}:", "",
              "| method | PSNR (dB) | SSIM | edge energy / truth's |", "|---|---|---|---|"]
    lines[-2] = "| method | PSNR (dB) | SSIM | edge energy / truth's | n |"
    lines[-1] = "|---|---|---|---|---|"
    rows = [("bicubic", m["bicubic"], m["n"]), (f"this stage ({result.get('kind', 'diffusion')})", m["sr"], m["n"])]
    rows += [(c["label"], c["sr"], c["n"]) for c in result.get("compare", [])]
    for name, r, n in rows:
        lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['edge_energy']:.2f} | {n} |")
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


def write_card(path: Path, run: Path, result: dict, name: str = "toy-sr-4x", notes: str = "") -> None:
    """The stage's model card: recipe from the run's config and log, then the measured tables."""
    config = json.loads((run / "config.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps, every = log[-1]["step"], config.get("log_every", 50)
    minutes = sum(every / r["steps_per_s"] for r in log) / 60
    m = result["main"]
    regression = config.get("sr_regression")
    what = ("SR3's regression model: the image predicted from the low-resolution input in one forward "
            "pass (MSE)" if regression else
            f"a diffusion stage ({config['schedule']['prediction']}-prediction, {config['loss_weighting']} "
            f"weighting, sampled by {result.get('kind')})")
    card = f"""# {name} (the cascade's super-resolution stage, `gen upscale`)

4x super-resolution: 32x32 pixels in, 128x128 out, run after the text-to-image base by the
shipped cascade (`gen image` at its default size) and by `gen upscale`. The fully
convolutional {config['model']} U-Net (no attention, no text) sees the upsampled
low-resolution image concatenated to its input and the embedded augmentation level; it is
{what}. Weights stored in float16.

## Recipe

`python scripts/train_default_sr.py --minutes {config['max_minutes']:g} --threads {config.get('threads')} \
--workers {config['workers']}` on the 2-core CPU:

- data: `toy` renders at {config['size']}x{config['size']} (gen.toyworld, seed {config['seed']}; every
  image new), a random {config['crop']}x{config['crop']} crop of each, box-downsampled {config['scale']}x to
  its low-resolution input (what users have; the renders are never drawn at low resolution)
- noise-conditioning augmentation: the input noised by the forward process of the
  {config['schedule']['beta_schedule']} schedule at a level drawn uniformly from
  [0, {config.get('sr_aug_max', 1.0):g}], which the model is told; sampled at sr-noise {m['sr_noise']} by default
- AdamW lr {config['lr']} (warm-up {config['warmup']} steps), grad clip {config['grad_clip']},
  EMA {config['ema_decay']} (the shipped weights), bf16 autocast, channels_last
- {steps:,} steps x batch {config['batch']} = {steps * config['batch']:,} crops in {minutes:.1f} min of training
  (wall time from the log; final loss {log[-1]['loss']:.4f})

## Measured

`python scripts/eval_sr.py --model {name} --n {m['n']} ...` on this 2-core CPU:

{markdown(result)}
{notes}"""
    path.write_text(card)


def main() -> None:
    from gen.evaluate import evaluate_sr
    from gen.pipeline import Pipeline, SuperResolution

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the SR stage folder (or shipped name)")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                        help="another stage for the main table, e.g. one trained for the same wall time (repeatable)")
    parser.add_argument("--compare-n", type=int, default=100, help="renders for each --compare stage")
    parser.add_argument("--base", default="toy-image-dit-ft", help="the text-to-image base whose samples it upscales")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--levels", default="0,0.1,0.2,0.3,0.5")
    parser.add_argument("--level-n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--run", type=Path, help="the training run folder (config.json, log.jsonl) for --card")
    parser.add_argument("--card", type=Path, help="write the model card here")
    parser.add_argument("--notes", type=Path, help="markdown appended to the card (design notes)")
    args = parser.parse_args()
    stage = SuperResolution.from_pretrained(args.model)
    levels = [float(x) for x in args.levels.split(",") if x]
    result = {"model": args.model, "kind": "regression, one pass" if stage.regression else
              f"diffusion, {stage.defaults.sampler} {args.steps or stage.defaults.steps} steps",
              "main": evaluate_sr(stage, n=args.n, steps=args.steps), "level_n": args.level_n, "compare": []}
    print(json.dumps({k: result["main"][k] for k in ("sr", "bicubic", "seconds_per_image")}), flush=True)
    for item in args.compare:
        label, _, path = item.partition("=")
        other = evaluate_sr(SuperResolution.from_pretrained(path), n=args.compare_n)
        result["compare"].append({"label": label, "path": path, "n": args.compare_n, "sr": other["sr"],
                                  "seconds_per_image": other["seconds_per_image"]})
        print(json.dumps(result["compare"][-1]), flush=True)
    if levels:
        result["levels_renders"] = renders_table(stage, levels, args.level_n, args.steps)
        result["levels_base"] = base_table(Pipeline.from_pretrained(args.base), stage, levels, args.level_n,
                                           steps=args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(markdown(result))
    if args.card:
        write_card(args.card, args.run, result, notes=args.notes.read_text() if args.notes else "")
        print(f"wrote {args.card}")


if __name__ == "__main__":
    main()
