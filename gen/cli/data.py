"""`gen data`: write a captioned dataset to disk."""

from __future__ import annotations

import argparse

from gen.data.export import VIDEO_FORMATS, write_toy_clips, write_toy_images

KINDS = ("toy", "toy-video")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", metavar="KIND", help=f"which dataset: {', '.join(KINDS)}")
    parser.add_argument("--out", required=True, help="folder to create (must be new or empty)")
    parser.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    parser.add_argument("--size", type=int, default=None, help="side in pixels (default 64; 32 for clips)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (toy-video, default 16)")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second (toy-video, default 8)")
    parser.add_argument("--format", default="frames", choices=VIDEO_FORMATS,
                        help="clip files (toy-video): frame folders (lossless), gif or mp4")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset gen data wrote in --out: only its files that are unchanged "
                             "(by their recorded sha256) are removed; anything else is kept and named")


def run(args: argparse.Namespace) -> int:
    from gen.errors import GenError

    if args.kind == "toy":
        size = 64 if args.size is None else args.size  # --size 0 is an error, not the default
        path = write_toy_images(args.out, n=args.n, size=size, seed=args.seed, overwrite=args.overwrite)
    elif args.kind == "toy-video":
        size = 32 if args.size is None else args.size
        path = write_toy_clips(args.out, n=args.n, size=size, frames=args.frames, fps=args.fps,
                               seed=args.seed, format=args.format, overwrite=args.overwrite)
    else:
        raise GenError(f"unknown dataset kind {args.kind!r}; known: {', '.join(KINDS)}")
    print(path)
    return 0
