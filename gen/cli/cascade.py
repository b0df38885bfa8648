"""`gen cascade BASE SR... --out DIR`: chain a text-to-image pipeline and super-resolution
stages into one cascade folder that `gen image --model DIR` runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from gen.errors import GenError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", help="the text-to-image pipeline (shipped name or folder)")
    parser.add_argument("stages", nargs="+", metavar="SR", help="super-resolution stages, in order (gen train sr)")
    parser.add_argument("--out", required=True, help="new folder for the cascade")


def run(args: argparse.Namespace) -> int:
    from gen.lock import output_lock
    from gen.pipeline import Cascade, Pipeline, SuperResolution

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenError(f"--out {out} exists and is not an empty folder; choose a new one")
    if not out.parent.is_dir():
        raise GenError(f"--out: {out.parent} is not a folder; create it first")
    cascade = Cascade(Pipeline.from_pretrained(args.base), [SuperResolution.from_pretrained(s) for s in args.stages])
    with output_lock(out, beside=True):
        cascade.save_pretrained(out)
    print(f"{out}: {' -> '.join(map(str, cascade.sizes))} pixels")
    return 0
