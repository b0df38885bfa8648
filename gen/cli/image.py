"""`gen image "a cat in a hat"`: generate images with a text-to-image pipeline."""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from gen.cli import args as types
from gen.errors import GenError
from gen.runtime import PRECISIONS

DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default=None, help='what to draw, e.g. "a cat in a hat"')
    parser.add_argument("--prompts", metavar="FILE", help="draw every prompt of this text file (one per line)")
    parser.add_argument("--out", help="PNG file or existing folder (default: a name from the prompt, here)")
    parser.add_argument("--n", type=types.integer(1, 64), default=1, help="how many images (image k uses seed + k)")
    parser.add_argument("--grid", action="store_true", help="also write the images as one grid")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--sampler", default=None, help="ddim, ddpm, dpm++2m, heun or diffusers:<SchedulerClass>")
    parser.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--negative", default=None, help="negative prompt (guides away from it)")
    parser.add_argument("--model", default="default",
                        help="shipped name, gen pipeline folder, or diffusers Stable-Diffusion folder or hub id")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights and compute precision")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="sampling compute: bf16 autocast or fp32 (auto: bf16 where the hardware has it)")
    parser.add_argument("--size", type=types.pixels, default=None,
                        help="image side (default: the model's; a cascade stops after the stage that draws it)")
    parser.add_argument("--sr-noise", type=types.number(0, 1), default=None,
                        help="cascade: augmentation level of each super-resolution stage's input, 0-1")
    parser.add_argument("--sr-steps", type=types.integer(1, 1000), default=None,
                        help="cascade: sampling steps of each super-resolution stage")
    parser.add_argument("--init-image", metavar="IMAGE",
                        help="image-to-image: start from this picture, noised to --strength (resized to the output)")
    parser.add_argument("--strength", type=types.number(0, 1), default=None,
                        help="with --init-image: how much is redrawn, 0 (the image) to 1 (anew); default 0.8, "
                             "1 with --mask")
    parser.add_argument("--mask", metavar="MASK",
                        help="with --init-image: inpaint, redrawing where the mask is white and keeping the rest")
    parser.add_argument("--lora", metavar="FOLDER",
                        help="apply a LoRA adapter folder (gen train image --init ... --lora-rank R writes RUN/lora)")
    parser.add_argument("--from", dest="from_png", metavar="IMAGE.png",
                        help="regenerate from the parameters stored in a PNG made by gen (flags override)")
    parser.add_argument("--download", action="store_true",
                        help="allow fetching a hub model that is not in the local cache (network)")


def slug(prompt: str) -> str:
    """A file stem from the prompt: its words (letters and digits of any script) joined by
    dashes; a prompt with none (emoji only) gets `prompt-<hash>`, an empty one `unconditional`."""
    words = re.sub(r"[\W_]+", "-", prompt.lower()).strip("-")
    if words:
        return words[:60].rstrip("-")
    if prompt.strip():
        import hashlib

        return "prompt-" + hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return "unconditional"


def free_path(path: Path) -> Path:
    """`path`, or the first of path-1, path-2, ... that does not exist."""
    if not path.exists():
        return path
    k = 1
    while (candidate := path.with_name(f"{path.stem}-{k}{path.suffix}")).exists():
        k += 1
    return candidate


def _targets(args, prompt: str) -> tuple[Path, str, str]:
    """(folder, file stem, suffix) for the output, checking the folder can be written."""
    suffix = ".png"
    if args.out is None:
        folder, stem = Path.cwd(), slug(prompt)
    elif args.out.endswith(("/", "\\")) or Path(args.out).is_dir():
        folder, stem = Path(args.out), slug(prompt)
    else:
        out = Path(args.out)
        if out.suffix.lower() != ".png":
            raise GenError(f"--out must be a .png file or an existing folder, got {args.out}")
        folder, stem, suffix = out.parent, out.stem, out.suffix  # the user's spelling (x.PNG stays x.PNG)
    if not folder.is_dir():
        raise GenError(f"--out: folder {folder} does not exist; create it first")
    import os

    if not os.access(folder, os.W_OK):
        raise GenError(f"--out: folder {folder} is not writable")
    return folder, stem, suffix


# What a PNG's "gen" chunk may set, with the type each value must have.
FROM_KEYS = {"prompt": str, "seed": int, "steps": int, "sampler": str, "cfg": (int, float), "negative": str,
             "model": str, "dtype": str, "precision": str, "size": int, "sr_noise": (int, float), "sr_steps": int,
             "init_image": str, "mask": str, "strength": (int, float), "lora": str}


def _from_png(args) -> None:
    """Fill the flags not given from the parameters a PNG written by gen stores.

    The PNG is someone else's input: every value is type-checked, and a model it names
    that is not a local folder or shipped name (a hub id) is loaded only with --download
    (or when the user names the model with --model); either way gen says which model."""
    from gen.cli.args import SEED_LIMIT
    from gen.video_io import read_png_text

    stored = read_png_text(args.from_png)
    if "gen" not in stored:
        raise GenError(f"--from {args.from_png}: no generation parameters (not an image written by gen image)")
    try:
        params = json.loads(stored["gen"])
    except json.JSONDecodeError as err:
        raise GenError(f"--from {args.from_png}: its generation parameters are not valid JSON ({err})") from None
    if not isinstance(params, dict):
        raise GenError(f"--from {args.from_png}: its generation parameters are not a JSON object")
    for key, kind in FROM_KEYS.items():
        if key in params and params[key] is not None and (not isinstance(params[key], kind)
                                                           or isinstance(params[key], bool)):
            what = getattr(kind, "__name__", "number")
            raise GenError(f"--from {args.from_png}: stored {key} {params[key]!r} is not a {what}")
    if not isinstance(params.get("seed", 0), int) or not 0 <= params.get("seed", 0) < SEED_LIMIT:
        raise GenError(f"--from {args.from_png}: stored seed {params.get('seed')!r} is not a 64-bit seed")
    given = {a.split("=")[0] for a in args.argv if a.startswith("--")}
    if args.prompt is None:
        if "prompt" not in params:
            raise GenError(f"--from {args.from_png}: no prompt stored; give one")
        args.prompt = params["prompt"]
    for key in ("steps", "sampler", "cfg", "negative", "model", "dtype", "precision", "size", "sr_noise",
                "sr_steps"):
        if f"--{key.replace('_', '-')}" not in given and params.get(key) is not None:
            setattr(args, key, params[key])
    if args.dtype not in DTYPES:
        raise GenError(f"--from {args.from_png}: stored dtype {args.dtype!r} is not one of {', '.join(DTYPES)}")
    if "--precision" not in given and "precision" not in params:
        args.precision = "fp32"  # written before gen sampled in bf16: it was drawn in float32
    if args.precision not in PRECISIONS:
        raise GenError(f"--from {args.from_png}: stored precision {args.precision!r} is not one of "
                       f"{', '.join(PRECISIONS)}")
    if "--seed" not in given and "seed" in params:
        args.seed = params["seed"]
    for key, flag in (("init_image", "--init-image"), ("mask", "--mask"), ("lora", "--lora")):
        if params.get(key) and getattr(args, key) is None:
            raise GenError(f"--from {args.from_png} was drawn from {flag} {params[key]!r}: give it again with {flag}")
    if "--strength" not in given and isinstance(params.get("strength"), (int, float)) and args.init_image:
        args.strength = params["strength"]
    if "--model" not in given:
        from gen.pipeline import is_local_model

        if not is_local_model(args.model) and not args.download:
            raise GenError(f"--from {args.from_png} names the model {args.model!r}, which is not on this machine; "
                           f"pass --download to fetch it from the hub, or --model to choose another")
    print(f"gen: --from {args.from_png}: model {args.model}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import torch

    from gen.pipeline import Cascade, Pipeline
    from gen.runtime import resolve_device

    if args.from_png:
        _from_png(args)
    if args.prompts:
        if args.prompt is not None or args.from_png:
            raise GenError("give a prompt, --from or --prompts FILE, not more than one")
        if args.out and not (args.out.endswith(("/", "\\")) or Path(args.out).is_dir()):
            raise GenError(f"--prompts writes files named from each prompt: --out must be an existing folder, "
                           f"got {args.out}")
        prompts = types.read_prompts(args.prompts)
    elif args.prompt is None:
        raise GenError('give a prompt, e.g. gen image "a cat in a hat" (or --from IMAGE.png, or --prompts FILE)')
    else:
        prompts = [args.prompt]
    targets = [_targets(args, prompt) for prompt in prompts]
    device = resolve_device(args.device)
    if not prompts[0].strip():
        print("gen: empty prompt: drawing unconditional samples", file=sys.stderr)

    pipe = Pipeline.from_pretrained(args.model, device=device, dtype=getattr(torch, args.dtype),
                                    local_files_only=not args.download)
    if args.lora:
        from gen.pipeline.lora import load_lora

        load_lora(pipe, args.lora)
    pipe.precision = args.precision
    cascade = {k: getattr(args, k) for k in ("sr_noise", "sr_steps") if getattr(args, k) is not None}
    if cascade and not isinstance(pipe, Cascade):
        raise GenError(f"--{next(iter(cascade)).replace('_', '-')} is for a cascade (a base and super-resolution "
                       f"stages); {args.model} is a single pipeline")
    if (args.strength is not None or args.mask) and not args.init_image:
        raise GenError(f"{'--strength' if args.strength is not None else '--mask'} edits an image: "
                       f"give it with --init-image")
    edit = {}
    if args.init_image:
        out_size = args.size or pipe.defaults.size
        edit = {"init": types.read_image(args.init_image, "--init-image", out_size), "strength": args.strength,
                "mask": types.read_image(args.mask, "--mask", out_size, mask=True) if args.mask else None}
    written = []
    for prompt, target in zip(prompts, targets):
        written += _draw(args, pipe, prompt, target, cascade, edit)
    for path in written:
        print(path)
    return 0


def _draw(args, pipe, prompt: str, target: tuple[Path, str, str], cascade: dict, edit: dict) -> list[Path]:
    """`--n` images of one prompt, written with their parameters (and a grid): the paths."""
    import numpy as np

    from gen import __version__
    from gen.pipeline import Cascade, to_uint8
    from gen.pipeline.image import edit_strength
    from gen.video_io import write_png

    folder, stem, suffix = target
    seeds = [args.seed + k for k in range(args.n)]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: print(f"gen: warning: {message}", file=sys.stderr)
        images = to_uint8(pipe.generate([prompt] * args.n, seeds, steps=args.steps, sampler=args.sampler,
                                        cfg=args.cfg, negative=args.negative, size=args.size, **cascade,
                                        **edit))
    d = pipe.defaults
    params = {"prompt": prompt, "seed": args.seed, "steps": args.steps or d.steps, "sampler": args.sampler or d.sampler,
              "cfg": d.cfg if args.cfg is None else args.cfg, "negative": args.negative or "", "model": args.model,
              "dtype": args.dtype, "precision": pipe.compute_precision, "size": images.shape[1]}
    if args.lora:
        params["lora"] = args.lora
    if args.init_image:
        params.update(init_image=args.init_image, mask=args.mask or "",
                      strength=edit_strength(args.strength, args.mask is not None))
    if isinstance(pipe, Cascade):  # every stage's parameters; sr_noise / sr_steps as given, for --from
        params.update(cascade, stages=pipe.stage_parameters(**cascade)[:pipe.stages_for(images.shape[1])])
    written = []
    for k, image in enumerate(images):
        meta = {**params, "seed": seeds[k]}
        chunks = {"gen": json.dumps(meta), "prompt": prompt, "software": f"gen {__version__}"}
        written.append(_write(folder / f"{stem}{suffix}", image, chunks, write_png))
    if args.grid and args.n > 1:
        cols = int(np.ceil(np.sqrt(args.n)))
        pad = np.zeros((cols * ((args.n + cols - 1) // cols) - args.n, *images.shape[1:]), np.uint8)
        tiles = np.concatenate([images, pad])
        grid = np.concatenate([np.concatenate(list(tiles[r:r + cols]), 1) for r in range(0, len(tiles), cols)], 0)
        written.append(_write(folder / f"{stem}-grid{suffix}", grid, {"gen-grid": json.dumps(params)}, write_png))
    return written


def _write(path: Path, image, chunks: dict, write_png) -> Path:
    for _ in range(100):  # another process may take the name between the check and the write
        try:
            return write_png(free_path(path), image, chunks)
        except GenError as err:
            if "exists" not in str(err):
                raise
    raise GenError(f"could not find a free file name next to {path}")
