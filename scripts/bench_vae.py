"""VAE throughput: encode and decode images/s, ours vs diffusers' AutoencoderKL, one run.

    python scripts/bench_vae.py [--size 64] [--batch 16] [--repeats 5] [--threads 2] [--config PATH]

The config is the shipped toy VAE's (gen/weights/toy-vae/config.json) when it is there,
else factor 4 with channels (64, 128, 128); `--config` names another config.json or
checkpoint folder. Ours is `models.create_vae` of that config, timed at its best settings
(bf16 autocast + channels_last) and at default settings (fp32, contiguous); theirs is a
diffusers `AutoencoderKL` built with the same blocks, widths, layers and latent channels
(and our weights, so both compute the same function: checked at fp32), at its default
settings (fp32). Same inputs, same process; every model is warmed first, the three take
turns within each round, and each time is the fastest of --repeats rounds. Ratios are
theirs' time / ours (> 1: ours faster); GFLOP/s from torch's FLOP counter (fp32 forward).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import models

SHIPPED = Path(__file__).resolve().parents[1] / "gen" / "weights" / "toy-vae" / "config.json"
FALLBACK = {"factor": 4, "latent_channels": 4, "channels": (64, 128, 128), "layers_per_block": 1}


def load_config(path: Path | None) -> tuple[dict, str]:
    path = path or (SHIPPED if SHIPPED.is_file() else None)
    if path is None:
        return dict(FALLBACK), "factor 4, channels (64, 128, 128) (the shipped toy VAE is not there yet)"
    config = models.read_config(path)
    config.pop("_class", None)
    return config, str(path)


def theirs_from(ours: models.ImageVAE):
    """diffusers' AutoencoderKL with our config's blocks and our weights (default settings)."""
    from diffusers import AutoencoderKL

    cfg, channels = ours.config, tuple(ours.model.config.block_out_channels)
    theirs = AutoencoderKL(
        in_channels=cfg.in_channels, out_channels=cfg.in_channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels), up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels, layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_groups, mid_block_add_attention=cfg.mid_attention)
    theirs.load_state_dict(ours.model.state_dict())
    return theirs.eval()


def flops(fn, v) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(v)
    return counter.get_total_flops()


def bench(cases: dict, x: torch.Tensor, z: torch.Tensor, repeats: int) -> dict:
    """{name: (encode s, decode s)} for one batch, the fastest of `repeats` rounds. The
    cases take turns within each round, so a noisy neighbour on a shared CPU slows all
    of them alike rather than whichever happened to run at the time."""
    def call(fn, v, bf16):
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            fn(v)

    inputs = {}
    for name, (enc, dec, bf16, channels_last) in cases.items():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        inputs[name] = x.contiguous(memory_format=fmt), z.contiguous(memory_format=fmt)
        for _ in range(2):  # warm-up: oneDNN primitive caches, the allocator
            call(enc, inputs[name][0], bf16)
            call(dec, inputs[name][1], bf16)
    best = {name: [float("inf"), float("inf")] for name in cases}
    for _ in range(repeats):
        for name, (enc, dec, bf16, _) in cases.items():
            for i, fn in enumerate((enc, dec)):
                t = time.perf_counter()
                call(fn, inputs[name][i], bf16)
                best[name][i] = min(best[name][i], time.perf_counter() - t)  # noise only ever adds time
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side (default 64, the toy VAE's training size)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--config", type=Path, default=None, help="a VAE config.json or checkpoint folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config, source = load_config(args.config)
    ours = models.ImageVAE.from_config(config).eval()  # = models.create_vae(**config), JSON lists as tuples
    theirs = theirs_from(ours)
    f = ours.config.factor
    if args.size % f:
        raise SystemExit(f"--size {args.size} is not divisible by the VAE factor {f}")
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    z = torch.randn(args.batch, ours.latent_channels, args.size // f, args.size // f)

    with torch.inference_mode():  # same function: our encode/decode is their encode/decode + scaling
        s, b = ours.config.scaling_factor, ours.config.shift_factor
        enc_err = (ours.encode(x[:2]) / s + b - theirs.encode(x[:2]).latent_dist.mode()).abs().max().item()
        dec_err = (ours.decode(z[:2]) - theirs.decode(z[:2] / s + b).sample).abs().max().item()

    fast = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    cases = {
        "ours best (bf16 autocast + channels_last)": (fast.encode, fast.decode, True, True),
        "ours default (fp32)": (ours.encode, ours.decode, False, False),
        "diffusers AutoencoderKL default (fp32)": (lambda v: theirs.encode(v).latent_dist.mode(),
                                                   lambda v: theirs.decode(v).sample, False, False),
    }
    times = bench(cases, x, z, args.repeats)
    gflop_enc, gflop_dec = flops(ours.encode, x) / 1e9, flops(ours.decode, z) / 1e9

    n = args.batch
    print(f"config: {source}")
    shown = {k: config[k] for k in ("factor", "channels", "layers_per_block", "latent_channels") if k in config}
    print(f"  {json.dumps(shown)}; {ours.num_parameters() / 1e6:.2f}M parameters")
    print(f"threads {args.threads}; batch {n} x 3 x {args.size} x {args.size}; fastest of {args.repeats}; "
          f"ours vs theirs at fp32: encode max |diff| {enc_err:.1e}, decode {dec_err:.1e}")
    print(f"forward GFLOP per image: encode {gflop_enc / n:.2f}, decode {gflop_dec / n:.2f}")
    print(f"{'':<42}{'encode img/s':>13}{'decode img/s':>13}{'enc ratio':>10}{'dec ratio':>10}"
          f"{'enc GFLOP/s':>12}{'dec GFLOP/s':>12}")
    ref = times["diffusers AutoencoderKL default (fp32)"]
    for label, (enc, dec) in times.items():
        print(f"{label:<42}{n / enc:>13.1f}{n / dec:>13.1f}{ref[0] / enc:>10.2f}{ref[1] / dec:>10.2f}"
              f"{gflop_enc / enc:>12.0f}{gflop_dec / dec:>12.0f}")


if __name__ == "__main__":
    main()
