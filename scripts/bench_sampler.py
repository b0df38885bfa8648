"""Sampler overhead: 50 DDIM steps with a trivial denoiser, ours vs diffusers' DDIMScheduler loop.

    python scripts/bench_sampler.py                    # CPU, SD-latent and video shapes
    python scripts/bench_sampler.py --device cuda --repeats 21

Both loops see the same x_T and the same denoiser (x -> 0.1 x, so the sampler's own
work dominates). diffusers' loop is the one its pipelines run: set_timesteps, then per
step the model call and scheduler.step. Times are medians over interleaved repeats; the
"loop only" columns subtract the bare denoiser calls. A ratio <= 1 means we add no
overhead beyond diffusers'.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import DDIMScheduler

from samplers import NoiseSchedule, sample

SHAPES = {"sd-latent": (4, 4, 64, 64), "video-latent": (1, 4, 16, 32, 32), "tiny": (1, 4, 8, 8)}


def trivial_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x * 0.1


def ours(x_T: torch.Tensor, sched: NoiseSchedule, steps: int) -> torch.Tensor:
    return sample(trivial_denoiser, x_T, sched, method="ddim", steps=steps)


def theirs(x_T: torch.Tensor, scheduler: DDIMScheduler, steps: int) -> torch.Tensor:
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T
    for t in scheduler.timesteps:
        out = trivial_denoiser(x, t.expand(x.shape[0]))
        x = scheduler.step(out, t, x).prev_sample
    return x


def denoiser_only(x_T: torch.Tensor, steps: int) -> torch.Tensor:
    x = x_T
    for t in range(steps):
        x = trivial_denoiser(x, torch.full((x.shape[0],), t, device=x.device))
    return x


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(shape, steps: int, repeats: int, device: torch.device) -> dict:
    sched = NoiseSchedule.create("scaled_linear", beta_start=0.00085, beta_end=0.012)
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=True
    )
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    a, b = ours(x_T, sched, steps), theirs(x_T, scheduler, steps)  # warm-up, and the same answer
    err = ((a - b).abs().max() / b.abs().max()).item()
    runs = {"ours": [], "theirs": [], "denoiser": []}
    for _ in range(repeats):  # interleaved, so drift in machine load hits all three alike
        runs["ours"].append(timed(lambda: ours(x_T, sched, steps), device))
        runs["theirs"].append(timed(lambda: theirs(x_T, scheduler, steps), device))
        runs["denoiser"].append(timed(lambda: denoiser_only(x_T, steps), device))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {**med, "rel_err": err}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{args.steps} DDIM steps, trivial denoiser, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")  # fmt: skip
    header = f"{'shape':<34}{'ours ms':>9}{'diffusers ms':>14}{'ratio':>7}{'loop-only ours/theirs ms':>27}{'max rel diff':>14}"
    print(header)
    for name in args.shapes:
        r = bench(SHAPES[name], args.steps, args.repeats, device)
        loop_ours, loop_theirs = r["ours"] - r["denoiser"], r["theirs"] - r["denoiser"]
        print(
            f"{name + ' ' + str(SHAPES[name]):<34}{1e3 * r['ours']:>9.2f}{1e3 * r['theirs']:>14.2f}"
            f"{r['ours'] / r['theirs']:>7.2f}{f'{1e3 * loop_ours:.2f} / {1e3 * loop_theirs:.2f}':>27}{r['rel_err']:>14.1e}"
        )


if __name__ == "__main__":
    main()
