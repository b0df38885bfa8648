"""Attention on the CPU at the shapes of the default video model: fused kernel vs plain ops.

    python scripts/bench_attention.py [--batch 8] [--repeats 5] [--dtype bfloat16] [--inference]

For each attention of a training step of the motion-module video model of
`scripts/train_default_video.py` (8 frames of 16x16 tokens,
width 192, 6 heads, a 32-token text context) it times forward + backward of
torch's scaled_dot_product_attention and of `models.blocks.attention`, side by side in one
run, and prints the median times and their ratio. The last rows compare a temporal
block's text cross-attention run once per clip (how DiTBlock runs it: a clip's positions
are one query sequence) with the context copied to every position (the old way).
`--inference`: forward only, without gradients, at the same shapes and at the shipped image
DiT's sampling shape (a CFG pair of 256 tokens), where `attention` runs plain ops in blocks.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from models.blocks import attention


def timed(fn, q, k, v, repeats: int, inference: bool = False) -> float:
    times = []
    for _ in range(repeats + 1):
        if inference:
            with torch.no_grad():
                start = time.perf_counter()
                for _ in range(10):
                    fn(q, k, v)
                times.append((time.perf_counter() - start) / 10)
            continue
        q_, k_, v_ = (t.detach().requires_grad_() for t in (q, k, v))
        start = time.perf_counter()
        fn(q_, k_, v_).float().sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--inference", action="store_true", help="forward only, no gradients")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    b, frames, side, heads, head_dim, text = args.batch, 8, 16, 6, 32, 32
    n = side * side
    shapes = {  # name: (sequences, query length, key length)
        "spatial self (frames x 256 tokens)": (b * frames, n, n),
        "spatial cross (a clip's frames -> text)": (b, frames * n, text),
        "temporal self (positions x 8 frames)": (b * n, frames, frames),
        "temporal cross (a clip's positions -> text)": (b, n * frames, text),
    }
    if args.inference:
        shapes["image DiT sampling (a CFG pair of 256 tokens)"] = (2, n, n)
    fused = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    what = "forward, no gradients" if args.inference else "forward + backward"
    print(f"batch {b}, {args.dtype}, {what}, median of {args.repeats}")
    print(f"{'attention':46s} {'fused ms':>9s} {'gen ms':>9s} {'fused/gen':>9s}")
    for name, (seqs, lq, lk) in shapes.items():
        q = torch.randn(seqs, heads, lq, head_dim, dtype=dtype)
        k, v = (torch.randn(seqs, heads, lk, head_dim, dtype=dtype) for _ in range(2))
        a, g = (timed(fn, q, k, v, args.repeats, args.inference) for fn in (fused, attention))
        print(f"{name:46s} {1e3 * a:9.2f} {1e3 * g:9.2f} {a / g:9.2f}")
    if args.inference:
        return
    q = torch.randn(b * n, heads, frames, head_dim, dtype=dtype)
    k, v = (torch.randn(b * n, heads, text, head_dim, dtype=dtype) for _ in range(2))
    per_row = timed(fused, q, k, v, args.repeats)
    q1 = q.reshape(b, n, heads, frames, head_dim).transpose(1, 2).reshape(b, heads, n * frames, head_dim)
    per_clip = timed(attention, q1, k[::n], v[::n], args.repeats)
    print(f"{'temporal cross, context per position (old)':46s} {1e3 * per_row:9.1f}")
    print(f"{'temporal cross, context per clip (now)':46s} {'':9s} {1e3 * per_clip:9.1f} {per_row / per_clip:9.2f}")


if __name__ == "__main__":
    main()
