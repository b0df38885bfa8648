"""Argument types shared by every subcommand: one validation layer for numbers.

Each is an argparse `type=`: a value outside its range is refused before anything runs,
as one line naming the flag, the value and the range (`argument --n: must be an integer
from 1 to 64, got 0`). Limits that depend on a model (trained size, frame count) are
checked where the model is loaded.
"""

from __future__ import annotations

import argparse
import math

from gen.runtime import MAX_FRAMES, MAX_SIDE

SEED_LIMIT = 2**63  # torch.Generator seeds are signed 64-bit


def integer(low: int | None = 1, high: int | None = None, why: str = ""):
    """An integer in [low, high] (either end open when None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if low is not None and value < low:
            span = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"at least {low}")
        elif high is not None and value > high:
            span = f"at most {high}"
        else:
            return value
        if low is not None and high is not None and high - low <= 1000:  # a short range reads best whole
            span = f"between {low} and {high}"
        raise argparse.ArgumentTypeError(f"must be {span}{f' ({why})' if why else ''}, got {value}")

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def names(text: str) -> tuple[str, ...]:
    """Comma-separated names (`animate,interpolate`) as a tuple, blanks dropped."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts:
        raise argparse.ArgumentTypeError(f"must be comma-separated names, got {text!r}")
    return parts


def number(low: float | None = None, high: float | None = None, low_open: bool = False, why: str = ""):
    """A finite float in [low, high] ((low, high] with low_open)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        bad = not math.isfinite(value)
        bad |= low is not None and (value <= low if low_open else value < low)
        bad |= high is not None and value > high
        if bad:
            if low == 0 and low_open and high is None:
                span = "positive"
            elif low is not None and high is not None:
                span = f"a number between {low} and {high}"
            elif low is not None:
                span = f"a number {'greater than' if low_open else 'at least'} {low}"
            else:
                span = "a finite number" if high is None else f"a number at most {high}"
            raise argparse.ArgumentTypeError(f"must be {span}{f' ({why})' if why else ''}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


seed = integer(0, SEED_LIMIT - 1, "a 64-bit seed")
positive = integer(1)
positive_number = number(0, low_open=True)
frames = integer(1, MAX_FRAMES)
pixels = integer(1, MAX_SIDE)
workers = integer(0, 64)


def read_image(path: str, flag: str = "--init-image", size: int | None = None, mask: bool = False):
    """An image file as a float tensor (1, 3, H, W) in [-1, 1] (a mask: (1, 1, H, W) of 0 and
    1, white = 1), resized to size x size when given (said once on stderr); a GenError naming
    the file when it is missing or not an image."""
    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from gen.errors import GenError

    file = Path(path)
    if not file.is_file():
        raise GenError(f"{flag} {path} does not exist; check the path")
    try:
        with Image.open(file) as im:
            im = im.convert("L" if mask else "RGB")
            if size is not None and im.size != (size, size):
                print(f"gen: {flag} {path} is {im.size[0]}x{im.size[1]}: resized to {size}x{size}", file=sys.stderr)
                im = im.resize((size, size), Image.NEAREST if mask else Image.BICUBIC)
            pixels = np.asarray(im)
    except (UnidentifiedImageError, OSError) as err:
        raise GenError(f"{flag} {path} is not a readable image ({err.__class__.__name__}); "
                       "give a PNG, JPEG or similar") from None
    x = torch.from_numpy(pixels.copy()).float()
    if mask:
        return (x >= 128).float()[None, None]
    return (x.permute(2, 0, 1) / 127.5 - 1)[None]


def read_prompts(path: str) -> list[str]:
    """The prompts of a UTF-8 text file, one per line (blank lines skipped); a GenError when
    the file is missing, unreadable or holds none."""
    from pathlib import Path

    from gen.errors import GenError, reading

    file = Path(path)
    if not file.is_file():
        raise GenError(f"--prompts {file} does not exist")
    with reading(file, "--prompts", "give a UTF-8 text file, one prompt per line"):
        prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise GenError(f"--prompts {file} holds no prompts (one per line)")
    return prompts
