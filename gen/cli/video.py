"""`gen video "a ball rolling left"`: generate a clip with a text-to-video pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from gen.cli.image import DTYPES, slug
from gen.cli import args as types
from gen.errors import GenError
from gen.runtime import PRECISIONS

FORMATS = {"gif": ".gif", "mp4": ".mp4", "png-frames": ""}  # --format -> file suffix ("" = a folder)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help='what to animate, e.g. "a ball rolling left"')
    parser.add_argument("--out", help="output file (.gif / .mp4), or an existing folder (default: a name "
                                      "from the prompt, here)")
    parser.add_argument("--format", choices=tuple(FORMATS), default=None,
                        help="gif (default), mp4 (needs PyAV) or png-frames (a folder of PNGs)")
    parser.add_argument("--frames", type=types.frames, default=None, help="frames to generate (default: the model's)")
    parser.add_argument("--fps", type=types.positive_number, default=None,
                        help="playback frame rate (default: the model's)")
    parser.add_argument("--size", type=types.pixels, default=None, help="frame side in pixels (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--sampler", default=None, help="ddim, ddpm, dpm++2m, heun or diffusers:<SchedulerClass>")
    parser.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--frame-cfg", type=float, default=1.0,
                        help="guidance on the known frame 0 of a masked-frame video model, beside --cfg on the "
                             "text (1 = none; 3 keeps the object's identity, at some cost in motion)")
    parser.add_argument("--negative", default=None, help="negative prompt (guides away from it)")
    parser.add_argument("--model", default="default", help="shipped name or a gen video pipeline folder")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights and compute precision")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="sampling compute: bf16 autocast or fp32 (auto: bf16 where the hardware has it)")
    parser.add_argument("--init-image", metavar="FILE", help="animate this still: it becomes frame 0")


def _target(args) -> Path:
    """The output path (not yet existing: -1, -2, ... appended to a taken name)."""
    from gen.cli.image import free_path

    fmt = args.format
    if args.out is not None and not (args.out.endswith(("/", os.sep)) or Path(args.out).is_dir()):
        out = Path(args.out)
        by_suffix = {".gif": "gif", ".mp4": "mp4", "": "png-frames"}
        if out.suffix.lower() not in by_suffix:
            raise GenError(f"--out must end in .gif or .mp4, name a new folder (PNG frames) or an existing "
                           f"folder, got {args.out}")
        if fmt is not None and by_suffix[out.suffix.lower()] != fmt:
            raise GenError(f"--out {args.out} does not match --format {fmt}")
        args.format = by_suffix[out.suffix.lower()]
        folder, name = out.parent, out.name
    else:
        args.format = fmt or "gif"
        folder = Path.cwd() if args.out is None else Path(args.out)
        name = slug(args.prompt) + FORMATS[args.format]
    if not folder.is_dir():
        raise GenError(f"--out: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise GenError(f"--out: folder {folder} is not writable")
    return free_path(folder / name)


def run(args: argparse.Namespace) -> int:
    import torch

    from gen import __version__
    from gen.pipeline import VideoCascade, VideoPipeline, clips_to_uint8
    from gen.runtime import resolve_device
    from gen.video_io import import_av, write_video

    path = _target(args)
    if args.format == "mp4":
        import_av()  # fail before generating
    device = resolve_device(args.device)

    timings = {}
    t0 = time.perf_counter()
    pipe = VideoPipeline.from_pretrained(args.model, device=device, dtype=getattr(torch, args.dtype))
    timings["load"] = time.perf_counter() - t0
    pipe.precision = args.precision
    d = pipe.defaults
    cascade = isinstance(pipe, VideoCascade)
    if cascade:  # --size, --fps and --frames pick where it stops (named when it cannot reach them)
        spatial, temporal, _ = pipe.plan(args.size, args.fps, args.frames)
        size, (frames, fps) = pipe.sizes[spatial], pipe.rates[temporal]
        frames = args.frames or frames
        first_size = pipe.sizes[0]
    else:
        size, frames, fps = args.size or d.size, args.frames or d.frames, args.fps or d.fps or 8.0
        first_size = size
        multiple = getattr(pipe.denoiser, "size_multiple", getattr(pipe.denoiser.config, "patch_size", 1))
        factor = multiple * (pipe.vae.scale_factor if pipe.vae is not None else 1)
        if size % factor:
            what = "patch size" if multiple == getattr(pipe.denoiser.config, "patch_size", 1) else \
                "patch size times its temporal pooling"
            raise GenError(f"--size {size} is not divisible by {factor} (the model's {what}"
                           f"{' times the VAE factor' if pipe.vae is not None else ''})")
    # frame 0 at the size the video stage draws (resized, and said once)
    init = types.read_image(args.init_image, size=first_size)[0] if args.init_image else None
    stop = {"fps": fps} if cascade else {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: print(f"gen: warning: {message}", file=sys.stderr)
        clip = pipe.generate([args.prompt], [args.seed], steps=args.steps, sampler=args.sampler, cfg=args.cfg,
                             negative=args.negative, size=size, frames=frames, init_image=init,
                             frame_cfg=args.frame_cfg, **stop)
    timings["generate"] = time.perf_counter() - t0
    params = {"prompt": args.prompt, "seed": args.seed, "steps": args.steps or d.steps,
              "sampler": args.sampler or d.sampler, "cfg": d.cfg if args.cfg is None else args.cfg,
              "frame_cfg": args.frame_cfg,
              "negative": args.negative or "", "model": args.model, "dtype": args.dtype,
              "precision": pipe.compute_precision, "size": size,
              "frames": frames, "fps": fps, "init_image": args.init_image or "", "software": f"gen {__version__}"}
    written = write_video(path, clips_to_uint8(clip)[0], fps, comment=json.dumps(params))
    print(written)
    return 0
