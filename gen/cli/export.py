"""`gen export PIPELINE --diffusers --out DIR`: a pipeline in diffusers' folder layout (the VAE,
scheduler and CLIP text encoder in diffusers' and transformers' own formats, gen's denoiser
as a custom component); see gen/pipeline/export.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from gen.errors import GenError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", metavar="PIPELINE",
                        help="shipped name (default is the shipped cascade) or pipeline folder, of any kind")
    parser.add_argument("--diffusers", action="store_true",
                        help="write diffusers' layout (required: the one export format so far)")
    parser.add_argument("--out", required=True, help="new folder for the export (never replaced)")
    parser.add_argument("--scheduler", default=None, metavar="CLASS",
                        help="diffusers scheduler class for scheduler/ (default: the one matching the pipeline's "
                             "sampler: DDIMScheduler for ddim, DPMSolverMultistepScheduler for dpm++2m, ...)")


def run(args: argparse.Namespace) -> int:
    from gen.lock import output_lock
    from gen.pipeline import load
    from gen.pipeline.export import export_diffusers, format_report

    if not args.diffusers:
        raise GenError("gen export needs the format to write: pass --diffusers (the one format so far)")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenError(f"--out {out} exists and is not empty; choose a new folder (an export never replaces one)")
    if not out.parent.is_dir():
        raise GenError(f"--out: {out.parent} is not a folder; create it first")
    pipe = load(args.pipeline)
    with output_lock(out, beside=True):
        report = export_diffusers(pipe, out, scheduler=args.scheduler)
    print("\n".join(format_report(report)))
    return 0
