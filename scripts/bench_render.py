"""Toy-world render speed: images (and clips) per second on one CPU core.

    python scripts/bench_render.py [--size 64] [--n 4000] [--repeats 5]

Pins itself to one core, warms the sprite cache, then renders fresh indices (scene
sampling, caption, attributes and pixels: everything a dataset item costs) and prints
the median rate over repeats. Issue 2 asks for at least 2,000 images/s at 64x64.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from gen.toyworld import toy_clip, toy_image


def rate(fn, n: int, start: int) -> float:
    t = time.perf_counter()
    for i in range(start, start + n):
        fn(i)
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"pinned to {cores} core")

    for i in range(500):  # sprite cache: every class at the levels this size uses
        toy_image(10**9 + i, args.size)
    images = [rate(lambda i: toy_image(i, args.size), args.n, k * args.n) for k in range(args.repeats)]
    print(f"images {args.size}x{args.size}: median {statistics.median(images):,.0f}/s "
          f"(min {min(images):,.0f}, max {max(images):,.0f}, {args.repeats} x {args.n})")

    n_clips = max(args.n // 40, 10)
    clips = [rate(lambda i: toy_clip(i, 32, 16, 8.0), n_clips, k * n_clips) for k in range(args.repeats)]
    print(f"clips 16x32x32: median {statistics.median(clips):,.1f}/s "
          f"= {16 * statistics.median(clips):,.0f} frames/s")


if __name__ == "__main__":
    main()
