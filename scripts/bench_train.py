"""Training throughput of the recipes gen trains, side by side in one run, against the code before issue 15.

    python scripts/bench_train.py [--quick] [--json] [--threads N] [--recipes image-dit-xs2-32,sr-unet-64]
                                  [--ref 7d3f35e]

For each recipe (the same weights and the same batch for every way, each way in a fresh
process of its own: a process's allocator history alone moves these numbers by 1.5x), the
samples/s of a training step (forward, MSE, backward, AdamW) under:
  eager_fp32  this checkout, float32, contiguous tensors, no compiler;
  before      the trainer's path at `--ref` (default 7d3f35e, the commit before issue 15):
              bf16 autocast, channels_last for convolutional models, with that commit's
              `models` (checked out into a temporary git worktree; nothing here changes);
  bf16        this checkout's trainer path without `--compile` (bf16 autocast, channels_last,
              glibc keeping freed memory: gen.runtime.keep_freed_memory);
  after       this checkout's trainer path with `--compile`: `bf16` plus the denoiser compiled
              by inductor (gen.train.fast.compile_denoiser; compile time printed apart).
`speedup` is after / before. It prints the model's achieved GFLOP/s on the fastest way (torch's
FLOP counter on one step) and that as a fraction of the bf16 matmul peak measured in the same
run. `--json` prints {"peak_gflops", "threads", "ref", "recipes": [{"name", "samples_per_s":
{...}, "speedup", "peak_fraction", "compile_s", "gflop_per_sample"}]}. `--quick`: smaller
batches, fewer repeats. `--ref HEAD` measures `before` on this commit's code.
`image-dit-xs2-32-head64` is the shipped image DiT with 3 heads of 64 channels instead of 6 of
32 (DiT's own head width): it measures what that design choice buys next to what the trainer
path buys. `sr-unet-s-64` is the shipped super-resolution stage's U-Net (sr-unet-s, 64x64 crops,
batch 16); until 2026-12-08 this row measured unet-s with attention and text at 64x64 (a
U-Net no recipe trains: 5.47 -> 6.23 samples/s, 1.14x, that day).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
CODE = Path(os.environ.get("BENCH_TRAIN_CODE", ROOT))  # whose `models` this process measures
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(CODE))

import models  # noqa: E402
from bench_denoisers import flops, matmul_peak, timed  # noqa: E402

TEXT_TOKENS, TEXT_DIM = 16, 128  # the shipped tiny text encoder's width


def recipes(quick: bool) -> dict:
    """name -> (build the denoiser, input shape per sample, batch, extra cond per sample)."""
    def image_dit(heads: int | None = None):
        def build():
            return models.create("dit-xs/2", text_dim=TEXT_DIM, pooled_dim=TEXT_DIM,
                                 **({"num_heads": heads} if heads else {}))
        return build

    def sr_unet():  # the shipped 4x super-resolution stage's U-Net (preset sr-unet-s: toy-sr-4x, fully
        # convolutional, low_res concatenated, noise level embedded), spelled out for codes without the preset
        return models.create("unet-s", sample_size=64, channels=(32, 64, 128), attention_levels=(), text_dim=None,
                             pooled_dim=None, concat_keys=("low_res",), noise_level=True)

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
        "sr-unet-s-64": (sr_unet, (3, 64, 64), 16 // q, {"low_res": (3, 64, 64), "noise_level": ()}),
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


def fresh(build, state: dict, x: torch.Tensor, channels_last: bool):
    """The recipe's denoiser with `state`, and its input, in the trainer's layout."""
    net = build()
    net.load_state_dict(state)
    conv = isinstance(net, models.UNet) and x.dim() == 4
    if channels_last and conv:  # the trainer's channels_last for convs
        return net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return net, x


def worker(name: str, way: str, state_file: str, quick: bool, repeats: int) -> None:
    """One way of one recipe in this process (BENCH_TRAIN_CODE's models): print its JSON."""
    from safetensors.torch import load_file

    if way in ("bf16", "after"):  # this checkout's trainer path, as gen.train.loop sets it up on the CPU
        from gen.runtime import keep_freed_memory

        keep_freed_memory()
    build, shape, batch, extra = recipes(quick)[name]
    x, t, cond, target = batch_for(shape, batch, extra)
    net, xs = fresh(build, load_file(state_file), x, channels_last=way != "eager_fp32")
    step = step_fn(net, xs, t, cond, target, bf16=way != "eager_fp32")
    compile_s = step_flops = None
    if way == "after":
        from gen.train.fast import compile_denoiser

        compile_denoiser(net, cache=None)
        start = time.perf_counter()
        step()  # compiles forward and backward
        compile_s = time.perf_counter() - start
    if way == "eager_fp32":
        step()
        step_flops = flops(step)
    print(json.dumps({"samples_per_s": batch / timed(step, repeats), "compile_s": compile_s,
                      "flops_per_step": step_flops, "models": models.__file__}))


def measure(name: str, build, batch: int, repeats: int, ref_code: Path, quick: bool, count: int) -> dict:
    """Every way in a fresh process of its own, alike but for the code (`before`: the ref's)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        state_file = str(Path(tmp) / "state.safetensors")
        save_file({k: v.contiguous() for k, v in build().state_dict().items()}, state_file)
        for way in ("eager_fp32", "before", "bf16", "after"):
            code = ref_code if way == "before" else ROOT
            argv = [sys.executable, __file__, "--worker", name, "--way", way, "--state", state_file,
                    "--repeats", str(repeats), "--threads", str(count)] + (["--quick"] if quick else [])
            out = subprocess.run(argv, env={**os.environ, "BENCH_TRAIN_CODE": str(code)}, check=True,
                                 capture_output=True, text=True).stdout
            result[way] = json.loads(out.strip().splitlines()[-1])
            if not result[way]["models"].startswith(str(code)):
                raise SystemExit(f"bench_train: {way} measured {result[way]['models']}, not {code}'s models")
            print(f"  {name}: {way:<11} {result[way]['samples_per_s']:8.2f} samples/s", file=sys.stderr, flush=True)
    return {"samples_per_s": {way: r["samples_per_s"] for way, r in result.items()},
            "compile_s": result["after"]["compile_s"], "flops_per_step": result["eager_fp32"]["flops_per_step"],
            "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches and fewer repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--recipes", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--ref", default="7d3f35e", help="the commit whose trainer path is `before`")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: `before` of one recipe
    parser.add_argument("--way", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--state", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    count = torch.get_num_threads()
    repeats = args.repeats or (2 if args.quick else 4)
    if args.worker:
        return worker(args.worker, args.way, args.state, args.quick, repeats)
    table = recipes(args.quick)
    names = args.recipes.split(",") if args.recipes else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"bench_train: unknown recipe {unknown[0]!r}; the recipes are {', '.join(table)}")
    peak = matmul_peak(torch.bfloat16)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-ref-") as tmp:
        ref_code = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(ref_code), args.ref],
                       check=True)
        try:
            for name in names:
                build, _, batch, _ = table[name]
                m = measure(name, build, batch, repeats, ref_code, args.quick, count)
                sps = m["samples_per_s"]
                gflops = m["flops_per_step"] / m["batch"] * max(sps.values()) / 1e9
                rows.append({"name": name, "batch": batch, "samples_per_s": sps,
                             "speedup": sps["after"] / sps["before"], "achieved_gflops": gflops,
                             "gflop_per_sample": m["flops_per_step"] / m["batch"] / 1e9,
                             "compile_s": m["compile_s"]})
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref_code)], check=True)
    peak_after = matmul_peak(torch.bfloat16)  # again: the machine's load may have moved
    report = {"peak_gflops": max(peak, peak_after), "threads": count, "ref": args.ref, "recipes": rows}
    for r in rows:
        r["peak_fraction"] = r["achieved_gflops"] / report["peak_gflops"]
    if args.json:
        print(json.dumps(report))
        return
    print(f"threads {count}; bf16 matmul peak {report['peak_gflops']:.0f} GFLOP/s (best of before/after the run); "
          f"before = {args.ref}")
    print(f"{'recipe':<24}{'batch':>6}{'eager fp32':>12}{'before':>10}{'bf16':>10}{'after':>10}{'speedup':>9}"
          f"{'GFLOP/s':>9}{'of peak':>9}{'compile s':>11}")
    for r in rows:
        s = r["samples_per_s"]
        print(f"{r['name']:<24}{r['batch']:>6}{s['eager_fp32']:>12.2f}{s['before']:>10.2f}{s['bf16']:>10.2f}"
              f"{s['after']:>10.2f}{r['speedup']:>9.2f}{r['achieved_gflops']:>9.0f}{100 * r['peak_fraction']:>8.0f}%"
              f"{r['compile_s']:>11.0f}")


if __name__ == "__main__":
    main()
