"""Writing captioned datasets to disk in the Hugging Face imagefolder convention.

A dataset folder holds the files, `metadata.jsonl` (one line per file: `file_name`,
`text`, and here `attributes`) and `gen-dataset.json`, a card naming what wrote it.
Writing is all or nothing: files go to a hidden `.partial` folder inside the output
folder and move into place only when every one is written; a failure or Ctrl-C
removes them. An existing non-empty folder is refused unless `overwrite=True`, and
even then only a folder this toolkit wrote is replaced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from gen import __version__
from gen.errors import GenError

CARD = "gen-dataset.json"
METADATA = "metadata.jsonl"
PARTIAL = ".partial"
VIDEO_FORMATS = ("frames", "gif", "mp4")


def _prepare(out: Path, overwrite: bool) -> tuple[bool, list[Path]]:
    """Check `out` may be written. Returns (created, old paths to remove at the end)."""
    if out.exists() and not out.is_dir():
        raise GenError(f"--out {out} exists and is a file; give a folder path")
    if not out.exists():
        return True, []
    entries = [p for p in out.iterdir() if p.name != PARTIAL]
    if not entries:
        return False, []
    if not overwrite:
        raise GenError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    if not (out / CARD).is_file():
        raise GenError(f"--out {out} is not a dataset folder written by gen (no {CARD}); "
                       "refusing to replace it even with --overwrite")
    old = [out / CARD, out / METADATA]
    with open(out / METADATA, encoding="utf-8") as f:
        old += [out / json.loads(line)["file_name"] for line in f if line.strip()]
    return False, [p for p in old if p.exists()]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_dataset(out: str | Path, samples: Iterator[tuple[str, str, dict]],
                  write_file: Callable[[Path, object], None], card: dict, *,
                  overwrite: bool = False, total: int | None = None) -> Path:
    """Write `(file_name, payload, text, attributes)` samples into `out` atomically.

    `write_file(path, payload)` writes one sample's file (an image, a clip).
    """
    from tqdm import tqdm

    out = Path(out)
    created, old = _prepare(out, overwrite)
    partial = out / PARTIAL
    try:
        if partial.exists():  # left by a crashed run
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        names = []
        with open(partial / METADATA, "w", encoding="utf-8") as meta:
            for file_name, payload, text, attributes in tqdm(samples, total=total, unit="sample",
                                                             desc=f"writing {out}", disable=None):
                write_file(partial / file_name, payload)
                meta.write(json.dumps({"file_name": file_name, "text": text, "attributes": attributes}) + "\n")
                names.append(file_name)
        (partial / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        for path in old:
            _remove(path)
        for name in names + [METADATA, CARD]:
            (partial / name).rename(out / name)
        partial.rmdir()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def _write_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, compress_level=3)


def write_toy_images(out, n: int, size: int, seed: int = 0, overwrite: bool = False) -> Path:
    """`gen data toy`: n images, `000000.png`..., with captions and attributes."""
    from gen.toyworld import toy_image

    _check_counts(n=n, size=size)

    def samples():
        for i in range(n):
            s = toy_image(i, size, seed)
            yield f"{i:06d}.png", s.pixels, s.caption, s.attributes

    card = {"generator": f"gen {__version__}", "dataset": "toy", "n": n, "size": size, "seed": seed}
    return write_dataset(out, samples(), _write_png, card, overwrite=overwrite, total=n)


def write_toy_clips(out, n: int, size: int, frames: int, fps: float, seed: int = 0,
                    format: str = "frames", overwrite: bool = False) -> Path:
    """`gen data toy-video`: n clips as frame folders (lossless), GIFs or MP4s."""
    from gen.toyworld import toy_clip
    from gen.video_io import write_video

    _check_counts(n=n, size=size, frames=frames)
    if not fps > 0:
        raise GenError(f"--fps must be positive, got {fps}")
    if format not in VIDEO_FORMATS:
        raise GenError(f"--format must be one of {', '.join(VIDEO_FORMATS)}, got {format!r}")
    suffix = "" if format == "frames" else f".{format}"

    def samples():
        for i in range(n):
            s = toy_clip(i, size, frames, fps, seed)
            yield f"{i:06d}{suffix}", s.pixels, s.caption, s.attributes

    card = {"generator": f"gen {__version__}", "dataset": "toy-video", "n": n, "size": size,
            "frames": frames, "fps": fps, "seed": seed, "format": format}
    return write_dataset(out, samples(), lambda path, px: write_video(path, px, fps), card,
                         overwrite=overwrite, total=n)


def _check_counts(**values) -> None:
    for name, value in values.items():
        if value <= 0:
            raise GenError(f"--{name} must be a positive integer, got {value}")
