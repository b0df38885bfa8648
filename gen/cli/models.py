"""`gen models`: the model presets (and, as they land, shipped and local checkpoints)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import models

    rows = models.summary()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'preset':<16}{'class':<6}{'parameters':>12}  {'native input':<22}{'GFLOPs/forward':>15}")
    for r in rows:
        shape = "x".join(map(str, r["input"][1:]))
        print(f"{r['name']:<16}{r['class']:<6}{r['parameters'] / 1e6:>11.2f}M  {shape:<22}{r['gflops']:>15.2f}")
    print("GFLOPs: one sample at the native size with 32 text tokens (torch FLOP counter).")
    return 0
