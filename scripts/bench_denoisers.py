"""Denoiser throughput: ours vs diffusers at the same width, depth and input, one run.

    python scripts/bench_denoisers.py [--batch 32] [--repeats 5] [--threads 2]

Pairs: dit-tiny vs DiTTransformer2DModel (class-conditional, adaLN-Zero) and
unet-tiny vs UNet2DConditionModel (cross-attention to 16 text tokens), each with the
same widths, depths, heads and input. For each pair it times forward (no grad) and a
training step (forward, MSE loss, backward, AdamW step) under:
  - ours at its best settings (the faster of fp32 and bf16 autocast, with channels_last
    for the U-Net, per measurement) vs theirs at default settings (fp32, contiguous);
  - both at fp32, and both at bf16 autocast (equal settings).
Times are the fastest of --repeats runs after warm-up. It prints samples/s, the ratio
ours / theirs (> 1: ours faster), and the achieved
GFLOP/s (torch FLOP counter) against the machine's matmul peak measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import models


def matmul_peak(dtype, n=1024, reps=20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def timed(fn, repeats: int) -> float:
    for _ in range(3):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)  # the least-disturbed run (timeit's advice); noise only ever adds time


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def make_pair(kind: str, batch: int):
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel

    torch.manual_seed(0)
    if kind == "dit":
        ours = models.create("dit-tiny", text_dim=None, pooled_dim=None, num_classes=1000)
        cfg = ours.config
        theirs = DiTTransformer2DModel(
            num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
            in_channels=cfg.in_channels, out_channels=cfg.in_channels, num_layers=cfg.depth,
            sample_size=cfg.sample_size, patch_size=cfg.patch_size, num_embeds_ada_norm=1000)
        x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        label = torch.randint(0, 1000, (batch,))
        t = torch.randint(0, 1000, (batch,))
        run_ours = lambda x: ours(x, t, {"label": label})  # noqa: E731
        run_theirs = lambda x: theirs(x, timestep=t, class_labels=label).sample  # noqa: E731
    else:
        ours = models.create("unet-tiny", pooled_dim=None)
        cfg = ours.config
        theirs = UNet2DConditionModel(
            sample_size=cfg.sample_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
            block_out_channels=cfg.channels, layers_per_block=cfg.num_res_blocks,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=cfg.text_dim, attention_head_dim=cfg.channels[-1] // cfg.num_heads,
            norm_num_groups=8)
        x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        text = torch.randn(batch, 16, cfg.text_dim)
        t = torch.randint(0, 1000, (batch,))
        run_ours = lambda x: ours(x, t, {"text": text})  # noqa: E731
        run_theirs = lambda x: theirs(x, t, encoder_hidden_states=text).sample  # noqa: E731
    return ours, theirs, x, run_ours, run_theirs


def measure(net, run, x, bf16: bool, channels_last: bool, repeats: int):
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    target = torch.randn_like(x)

    def forward():
        with torch.no_grad(), autocast(bf16):
            run(x)

    def train_step():
        with autocast(bf16):
            loss = F.mse_loss(run(x).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    fwd, step = timed(forward, repeats), timed(train_step, repeats)
    with autocast(bf16):
        fwd_flops = flops(lambda: run(x))
    net.to(memory_format=torch.contiguous_format)
    return fwd, step, fwd_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"threads {args.threads}; matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    print(f"{'pair':<6}{'settings':<50}{'fwd ours/s':>11}{'fwd theirs/s':>13}{'ratio':>7}"
          f"{'step ours/s':>12}{'step theirs/s':>14}{'ratio':>7}{'ours GFLOP/s':>13}")
    for kind in ("dit", "unet"):
        ours, theirs, x, run_ours, run_theirs = make_pair(kind, args.batch)
        cl = kind == "unet"
        low = "bf16" + (" + channels_last" if cl else "")
        for net, run in ((ours, run_ours), (theirs, run_theirs)):  # one-time costs (oneDNN caches, allocator)
            measure(net, run, x, False, False, 2)
        ours32 = measure(ours, run_ours, x, False, False, args.repeats)
        ours16 = measure(ours, run_ours, x, True, cl, args.repeats)
        theirs32 = measure(theirs, run_theirs, x, False, False, args.repeats)
        theirs16 = measure(theirs, run_theirs, x, True, cl, args.repeats)
        fwd_best = min((ours32, False), (ours16, True), key=lambda m: m[0][0])
        step_best = min((ours32, "fp32"), (ours16, low), key=lambda m: m[0][1])
        best = (fwd_best[0][0], step_best[0][1], fwd_best[0][2])
        label_best = f"ours best ({'bf16' if fwd_best[1] else 'fp32'} fwd, {step_best[1]} step) vs default"
        cases = [(label_best, best, fwd_best[1], theirs32), ("both fp32", ours32, False, theirs32),
                 (f"both {low}", ours16, True, theirs16)]
        for label, (of, os_, oflops), o_bf16, (tf, ts, _) in cases:
            b = args.batch
            peak = peak16 if o_bf16 else peak32
            print(f"{kind:<6}{label:<50}{b / of:>11.0f}{b / tf:>13.0f}{tf / of:>7.2f}"
                  f"{b / os_:>12.0f}{b / ts:>14.0f}{ts / os_:>7.2f}"
                  f"{oflops / of / 1e9:>8.0f} ({100 * oflops / of / 1e9 / peak:.0f}%)")


if __name__ == "__main__":
    main()
