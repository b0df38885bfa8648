"""Training throughput of the recipes gen trains, three ways, side by side in one run.

    python scripts/bench_train.py [--quick] [--json] [--threads N] [--recipes image-dit,sr-unet]

For each recipe (the same weights and the same batch for every way), the samples/s of a
training step (forward, MSE, backward, AdamW) under:
  eager_fp32  float32, contiguous tensors, no compiler;
  before      the trainer's path before `--compile`: bf16 autocast, channels_last for
              convolutional models (gen.train.diffusion);
  after       the trainer's path with `--compile`: `before` plus the denoiser compiled by
              inductor (gen.train.fast.compile_denoiser; compile time printed apart).
It prints the model's achieved GFLOP/s on the fastest way (torch's FLOP counter on one
step) and that as a fraction of the bf16 matmul peak measured in the same run. `--json`
prints {"peak_gflops", "threads", "recipes": [{"name", "samples_per_s": {...}, "speedup",
"peak_fraction", "compile_s", "gflop_per_sample"}]}. `--quick`: smaller batches, fewer repeats.
`image-dit-xs2-32-head64` is the shipped image DiT with 3 heads of 64 channels instead of 6 of
32 (DiT's own head width): CPU attention's backward costs about the same per head at these
sizes, so it measures what that design choice buys next to what the trainer path buys.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402
from bench_denoisers import flops, matmul_peak, timed  # noqa: E402
from gen.train.fast import compile_denoiser, threads  # noqa: E402

TEXT_TOKENS, TEXT_DIM = 16, 128  # the shipped tiny text encoder's width


def recipes(quick: bool) -> dict:
    """name -> (build the denoiser, input shape per sample, batch, extra cond per sample)."""
    def image_dit(heads: int | None = None):
        def build():
            return models.create("dit-xs/2", text_dim=TEXT_DIM, pooled_dim=TEXT_DIM,
                                 **({"num_heads": heads} if heads else {}))
        return build

    def sr_unet():  # the shape of a 4x super-resolution stage: low_res concatenated, noise level embedded
        return models.create("unet-s", sample_size=64, text_dim=TEXT_DIM, pooled_dim=TEXT_DIM,
                             concat_keys=("low_res",), noise_level=True)

    def video_dit(size: int):
        def build():
            image = models.create("dit-xs/2", sample_size=size, text_dim=TEXT_DIM, pooled_dim=TEXT_DIM)
            return models.video_from_image(image, frames=8)
        return build

    q = 4 if quick else 1
    return {
        "image-dit-xs2-32": (image_dit(), (3, 32, 32), 64 // q, {}),
        # the same DiT with DiT's head width, 64 (3 heads, not 6): a design alternative, not a trainer path
        "image-dit-xs2-32-head64": (image_dit(3), (3, 32, 32), 64 // q, {}),
        "sr-unet-64": (sr_unet, (3, 64, 64), 16 // q, {"low_res": (3, 64, 64), "noise_level": ()}),
        "video-dit-16x16x8": (video_dit(16), (3, 8, 16, 16), 16 // q, {}),
        "video-dit-32x32x8": (video_dit(32), (3, 8, 32, 32), 8 // min(q, 2), {}),
    }


def batch_for(shape, batch: int, extra: dict, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g)
    cond = {"text": torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=g),
            "text_mask": torch.ones(batch, TEXT_TOKENS, dtype=torch.bool),
            "pooled": torch.randn(batch, TEXT_DIM, generator=g)}
    for key, per_sample in extra.items():
        cond[key] = (torch.randint(0, 1000, (batch,), generator=g) if key == "noise_level"
                     else torch.randn(batch, *per_sample, generator=g))
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t, cond, torch.randn(x.shape, generator=g)


def step_fn(net, x, t, cond, target, bf16: bool):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(net(x, t, cond).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def measure(name: str, build, shape, batch: int, extra: dict, repeats: int) -> dict:
    torch.manual_seed(0)
    reference = build()
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    x, t, cond, target = batch_for(shape, batch, extra)
    conv = isinstance(reference, models.UNet)
    result, compile_s = {}, None
    step_flops = None
    for way in ("eager_fp32", "before", "after"):
        net = build()
        net.load_state_dict(state)
        xs = x
        if way != "eager_fp32" and conv and x.dim() == 4:  # the trainer's channels_last for convs
            net = net.to(memory_format=torch.channels_last)
            xs = x.contiguous(memory_format=torch.channels_last)
        step = step_fn(net, xs, t, cond, target, bf16=way != "eager_fp32")
        if way == "after":
            compile_denoiser(net, cache=None)
            start = time.perf_counter()
            step()  # compiles forward and backward
            compile_s = time.perf_counter() - start
        if way == "eager_fp32":
            step()
            step_flops = flops(step)
        seconds = timed(step, repeats)
        result[way] = batch / seconds
        print(f"  {name}: {way:<11} {batch / seconds:8.2f} samples/s", file=sys.stderr, flush=True)
    return {"samples_per_s": result, "compile_s": compile_s, "flops_per_step": step_flops, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--recipes", default=None, help="comma-separated names (default: all)")
    args = parser.parse_args()
    count = threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 4)
    peak = matmul_peak(torch.bfloat16)
    table = recipes(args.quick)
    names = args.recipes.split(",") if args.recipes else list(table)
    rows = []
    for name in names:
        build, shape, batch, extra = table[name]
        m = measure(name, build, shape, batch, extra, repeats)
        sps = m["samples_per_s"]
        best = max(sps.values())
        gflops = m["flops_per_step"] / m["batch"] * best / 1e9
        rows.append({"name": name, "batch": batch, "samples_per_s": sps, "speedup": sps["after"] / sps["before"],
                     "achieved_gflops": gflops,
                     "gflop_per_sample": m["flops_per_step"] / m["batch"] / 1e9, "compile_s": m["compile_s"]})
    peak_after = matmul_peak(torch.bfloat16)  # again: the machine's load may have moved
    report = {"peak_gflops": max(peak, peak_after), "threads": count, "recipes": rows}
    for r in rows:
        r["peak_fraction"] = r["achieved_gflops"] / report["peak_gflops"]
    if args.json:
        print(json.dumps(report))
        return
    print(f"threads {count}; bf16 matmul peak {report['peak_gflops']:.0f} GFLOP/s (best of before/after the run)")
    print(f"{'recipe':<20}{'batch':>6}{'eager fp32':>12}{'before':>10}{'after':>10}{'speedup':>9}"
          f"{'GFLOP/s':>9}{'of peak':>9}{'compile s':>11}")
    for r in rows:
        s = r["samples_per_s"]
        print(f"{r['name']:<20}{r['batch']:>6}{s['eager_fp32']:>12.2f}{s['before']:>10.2f}{s['after']:>10.2f}"
              f"{r['speedup']:>9.2f}{r['achieved_gflops']:>9.0f}{100 * r['peak_fraction']:>8.0f}%"
              f"{r['compile_s']:>11.0f}")


if __name__ == "__main__":
    main()
