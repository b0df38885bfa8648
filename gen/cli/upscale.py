"""`gen upscale photo.png --scale 4`: a super-resolution stage on image files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gen.cli import args as types
from gen.errors import GenError
from gen.runtime import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--model", default="default", help="shipped SR stage name or a stage folder (gen train sr)")
    parser.add_argument("--scale", type=types.integer(2, 16), default=None,
                        help="output side / input side; must be the stage's (default: the stage's)")
    parser.add_argument("--steps", type=types.integer(1, 1000), default=None,
                        help="sampling steps (default: the stage's)")
    parser.add_argument("--sampler", default=None, help="ddim, ddpm, dpm++2m or heun (default: the stage's)")
    parser.add_argument("--sr-noise", type=types.number(0, 1), default=None,
                        help="augmentation level of the input, 0-1 (default: the stage's)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="sampling compute: bf16 autocast or fp32 (auto: bf16 where the hardware has it)")
    parser.add_argument("--out", help="an existing folder, or a .png file for one input (default: here); names "
                                      "follow the inputs (photo.png -> photo-x4.png), existing files are kept")


def _read(paths: list[str]):
    """Every input as uint8 (H, W, 3), read before anything is written; grayscale and RGBA
    are converted to RGB (said once)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from gen.errors import reading

    images, converted = [], set()
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise GenError(f"{name}: no such file")
        with reading(path, "IMAGE", "give image files (PNG, JPEG, ...)"):
            try:
                with Image.open(path) as im:
                    im.load()
                    if im.mode != "RGB":
                        converted.add(im.mode)
                        im = im.convert("RGB")
                    images.append(np.asarray(im))
            except UnidentifiedImageError:
                raise GenError(f"{name} is not an image file PIL can read; give PNG, JPEG, ...") from None
    if converted:
        print(f"gen: converted {', '.join(sorted(converted))} input to RGB", file=sys.stderr)
    return images


def _targets(args, scale: int) -> list[Path]:
    import os

    if args.out and not Path(args.out).is_dir() and not args.out.endswith(("/", "\\")):
        out = Path(args.out)
        if out.suffix.lower() != ".png":
            raise GenError(f"--out must be a .png file or an existing folder, got {args.out}")
        if len(args.images) > 1:
            raise GenError(f"--out {args.out} is one file but {len(args.images)} images were given; "
                           f"give a folder")
        targets = [out]
    else:
        folder = Path(args.out) if args.out else Path.cwd()
        targets = [folder / f"{Path(name).stem}-x{scale}.png" for name in args.images]
    for folder in {t.parent for t in targets}:
        if not folder.is_dir():
            raise GenError(f"--out: folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK):
            raise GenError(f"--out: folder {folder} is not writable")
    return targets


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from gen import __version__
    from gen.cli.image import _write
    from gen.pipeline import to_uint8
    from gen.runtime import MAX_SIDE, resolve_device
    from gen.pipeline.superres import SuperResolution
    from gen.video_io import write_png

    stage = SuperResolution.from_pretrained(args.model, device=resolve_device(args.device))
    stage.precision = args.precision
    d = stage.defaults
    if args.scale is not None and args.scale != d.scale:
        raise GenError(f"--scale {args.scale}: the stage {args.model} upscales by {d.scale}; train a {args.scale}x "
                       f"stage (gen train sr --scale {args.scale}) or drop --scale")
    targets = _targets(args, d.scale)
    images = _read(args.images)
    for name, image in zip(args.images, images):
        if max(image.shape[:2]) * d.scale > MAX_SIDE:
            raise GenError(f"{name} is {image.shape[1]}x{image.shape[0]}: {d.scale}x that is past {MAX_SIDE} "
                           f"pixels a side, the most gen draws (no tiling); crop or shrink it first")
    steps, sampler, _ = stage.check_sampling(args.steps, args.sampler, 1.0)
    level = d.sr_noise if args.sr_noise is None else args.sr_noise
    written = []
    for k, (name, image, target) in enumerate(zip(args.images, images, targets)):
        low = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
        seed = args.seed + k
        high = to_uint8(stage.upscale(low, [seed], steps=steps, sampler=sampler, sr_noise=level))[0]
        meta = {"upscale": Path(name).name, "seed": seed, "steps": steps, "sampler": sampler, "sr_noise": level,
                "scale": d.scale, "model": args.model, "precision": stage.compute_precision}
        written.append(_write(target, high, {"gen": json.dumps(meta), "software": f"gen {__version__}"}, write_png))
    for path in written:
        print(path)
    return 0
