"""Writing captioned datasets to disk in the Hugging Face imagefolder convention.

A dataset folder holds the files, `metadata.jsonl` (one line per file: `file_name`,
`text`, and here `attributes`) and `gen-dataset.json`, the card: what wrote it, with
which settings, and a manifest of every file it wrote with its content hash:

    "files": {"000000.png": "<sha256 hex>", ...}            images, GIFs, MP4s
    "files": {"000000/000.png": "<sha256 hex>", ...}        frame-folder clips: each frame

Names are relative to the folder, "/"-separated. `metadata.jsonl` and the card are not
listed: they are gen's own and are always replaced.

Rules for writing into `out`:

- A missing folder is created; an empty one is used. Anything else is refused unless
  `overwrite=True`, and then only if its card has a manifest: a folder without a card is
  not gen's, and a card without file hashes (older gen) cannot say which files gen
  wrote, so gen deletes nothing on trust and asks for a new folder.
- `overwrite` removes exactly the manifest's files that are still what gen wrote: the
  name stays inside `out` (no absolute path, no `..`, no hidden part, no symlink on the
  way) and the content still has the recorded hash. A clip folder left empty by that is
  removed too. Everything else stays, and one line on stderr names what was kept.
  `metadata.jsonl` is never read for this: its `file_name`s are the user's to edit.
- A new file whose name is taken by something that stays (a user's file, an edited
  one) is refused with a GenError naming it, before the folder is changed.
- One writer: the whole run holds `gen.lock.output_lock(out)` (`out/.gen-lock`), so a
  second command on the same folder is refused instead of racing this one.
- All or nothing: samples are written into a scratch folder gen creates inside `out`
  with a unique name (`.gen-data-XXXXXXXX`, made exclusively by `tempfile.mkdtemp`) and
  move into place only when all are written. The old files move into the scratch
  folder first, so a failure or Ctrl-C during the swap puts them back. On failure gen
  removes its scratch folder and, if this run created `out` (or its parents), those
  folders if empty; it never deletes a folder it did not create. A scratch folder or
  lock left by a killed run is not counted as content; a scratch folder is never deleted
  by another run (a stale lock is taken over, see gen.lock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from gen import __version__
from gen.errors import GenError, read_json
from gen.lock import LOCK_NAME, output_lock
from gen.runtime import MAX_FRAMES, MAX_SIDE

log = logging.getLogger(__name__)

CARD = "gen-dataset.json"
METADATA = "metadata.jsonl"
SCRATCH_PREFIX = ".gen-data-"
VIDEO_FORMATS = ("frames", "gif", "mp4")

# ---------------------------------------------------------------- what gen wrote


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _is_plain_file(path: Path) -> bool:
    """A regular file, not a symlink (lstat)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _hashes(root: Path, name: str) -> dict[str, str]:
    """The manifest entries for what `write_file` wrote at `root/name`: the file, or each
    file inside the folder (a frame-folder clip), by "/"-separated name."""
    path = root / name
    if _is_plain_file(path):
        return {name: _sha256(path)}
    if not (path.is_dir() and not path.is_symlink()):
        raise RuntimeError(f"write_file did not write a file or folder at {path}")
    hashes = {}
    for folder, subfolders, files in os.walk(path):  # does not follow symlinks
        subfolders.sort()
        for file in sorted(files):
            if _is_plain_file(Path(folder) / file):
                rel = (Path(folder) / file).relative_to(root).as_posix()
                hashes[rel] = _sha256(Path(folder) / file)
    return hashes


def _recorded_files(out: Path) -> dict[str, str]:
    """The manifest of the dataset gen wrote in `out`; refuses folders it cannot trust."""
    for name in (CARD, METADATA):
        if os.path.lexists(out / name) and not _is_plain_file(out / name):
            raise GenError(f"{out / name} is not a plain file (a folder or a link), so gen data did not write it; "
                           "move it away or choose a new folder")
    if not (out / CARD).exists():
        raise GenError(f"--out {out} is not a dataset folder written by gen (no {CARD}); "
                       "refusing to replace it even with --overwrite")
    card = read_json(out / CARD, "dataset card", "choose a new folder")
    files = card.get("files") if isinstance(card, dict) else None
    if not isinstance(files, dict):
        raise GenError(f"--out {out} was written by an older gen data: its {CARD} has no file hashes, so gen "
                       "cannot tell which files it wrote and deletes none; choose a new folder for the dataset")
    return files


def _unchanged(out: Path, name, digest) -> bool:
    """Whether manifest entry `name` is a file gen wrote that nobody has touched since.

    The name must be relative, "/"-separated, with no empty, `.`, `..` or hidden part
    (gen writes none), every folder on the way a real folder (not a symlink, so it cannot
    lead outside `out`), the file a regular one, and its sha256 equal to `digest`.
    """
    if not (isinstance(name, str) and isinstance(digest, str)) or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    if any(part == "" or part.startswith(".") for part in parts):
        return False  # absolute ("/a" has an empty first part), ".", "..", hidden
    if name in (CARD, METADATA):
        return False
    path = out
    try:
        for part in parts[:-1]:
            path = path / part
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        path = path / parts[-1]
        return stat.S_ISREG(os.lstat(path).st_mode) and _sha256(path) == digest
    except OSError:  # missing, or unreadable: not provably gen's
        return False


@dataclass
class _Plan:
    """What an overwrite does to `out`: remove files, then folders if empty; keep the rest."""

    remove: list[str]   # manifest files still as gen wrote them
    folders: list[str]  # the folders holding them, deepest first
    kept: list[str]     # everything else in out ("/" ends a folder), besides the card and metadata


def _plan(out: Path, recorded: dict) -> _Plan:
    remove = sorted(name for name, digest in recorded.items() if _unchanged(out, name, digest))
    folders = {"/".join(name.split("/")[:i]) for name in remove for i in range(1, name.count("/") + 1)}
    removed = set(remove)
    kept = []

    def visit(folder: str) -> None:
        with os.scandir(out / folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                rel = f"{folder}/{entry.name}" if folder else entry.name
                if not folder and (entry.name in (CARD, METADATA) or _transient(entry.name)):
                    continue
                if rel in folders:
                    visit(rel)  # a gen folder: report what else is inside it
                elif rel not in removed:
                    kept.append(rel + "/" if entry.is_dir(follow_symlinks=False) else rel)

    visit("")
    return _Plan(remove, sorted(folders, key=lambda f: -f.count("/")), kept)


def _collision(out: Path, name: str) -> GenError:
    return GenError(f"--out {out} has {name!r}, which gen data did not write (or which changed since), and the "
                    "new dataset would replace it; nothing was changed: move it away or choose a new folder")


def _report_kept(out: Path, kept: list[str]) -> None:
    """One line on stderr naming what an overwrite left in place."""
    if not kept:
        return
    folders = sum(k.endswith("/") for k in kept)
    counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((len(kept) - folders, "file"), (folders, "folder"))
              if n]
    shown = ", ".join(k if k.isprintable() else ascii(k) for k in kept[:5]) + (", ..." if len(kept) > 5 else "")
    log.warning("kept %s in %s not written by gen data (or changed since): %s", " and ".join(counts), out, shown)


# ---------------------------------------------------------------- writing


def _transient(name: str) -> bool:
    """gen's own passing entries in `out`: a command's lock, a run's scratch folder.
    They are not dataset content, and this run never deletes another's."""
    return name == LOCK_NAME or name.startswith(SCRATCH_PREFIX)


def _make_folder(out: Path) -> list[Path]:
    """Create `out` and its missing parents; return the ones this call created, deepest first."""
    if out.exists() and not out.is_dir():
        raise GenError(f"--out {out} exists and is a file; give a folder path")
    missing = []
    folder = out
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # another process made it meanwhile: not ours to remove
        created.insert(0, folder)
    return created


def _old_manifest(out: Path, overwrite: bool) -> dict:
    """What an existing dataset in `out` lets gen replace: {} for an empty folder, the
    card's manifest with `overwrite`; any other folder is refused."""
    if not [name for name in os.listdir(out) if not _transient(name)]:
        return {}
    if not overwrite:
        raise GenError(f"--out {out} exists and is not empty; choose a new folder or pass --overwrite")
    return _recorded_files(out)


def _check_name(name, seen: set) -> None:
    """A sample's file name is one plain, visible name, used once."""
    if (not isinstance(name, str) or not name or name.startswith(".") or name in (CARD, METADATA)
            or any(c in name for c in "/\\\0")):
        raise GenError(f"sample file name {name!r} is not a plain file or folder name "
                       f"(no '/', not hidden, not {METADATA} or {CARD})")
    if name in seen:
        raise GenError(f"sample file name {name!r} is used twice; every sample needs its own file")
    seen.add(name)


def _write_samples(scratch: Path, out: Path, samples, write_file, card: dict, taken: dict[str, str],
                   total: int | None) -> list[str]:
    """Write every sample, metadata.jsonl and the card (with the manifest) into `scratch`.
    A name in `taken` (name -> the kept path that holds it) is refused before it is written."""
    from tqdm import tqdm

    names, seen, files = [], set(), {}
    with open(scratch / METADATA, "w", encoding="utf-8") as meta:
        for file_name, payload, text, attributes in tqdm(samples, total=total, unit="sample",
                                                         desc=f"writing {out}", disable=None):
            _check_name(file_name, seen)
            if file_name in taken:
                raise _collision(out, taken[file_name])
            write_file(scratch / file_name, payload)
            files.update(_hashes(scratch, file_name))
            meta.write(json.dumps({"file_name": file_name, "text": text, "attributes": attributes}) + "\n")
            names.append(file_name)
    (scratch / CARD).write_text(json.dumps({**card, "files": files}, indent=2) + "\n", encoding="utf-8")
    return names


class _NotRestored(GenError):
    """A failed swap could not put the old dataset back; its files stay in the scratch folder."""


def _swap(out: Path, scratch: Path, names: list[str], plan: _Plan) -> None:
    """Replace the old dataset in `out` by the new one in `scratch`; on any failure undo.

    Old files (the plan's, and the old card and metadata) move into `scratch/.replaced`,
    emptied gen folders are removed, then the new files move in, card last. A name that is
    taken meanwhile is refused, never replaced.
    """
    trash = scratch / ".replaced"
    old = [name for name in (METADATA, CARD) if _is_plain_file(out / name)] + plan.remove
    moved_out, emptied, moved_in = [], [], []
    try:
        for rel in old:
            (trash / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(out / rel, trash / rel)
            moved_out.append(rel)
        for folder in plan.folders:
            try:
                os.rmdir(out / folder)  # only if empty: whatever else is inside stays
            except OSError:
                continue
            emptied.append(folder)
        for name in names + [METADATA, CARD]:
            if os.path.lexists(out / name):
                raise _collision(out, name)
            os.rename(scratch / name, out / name)
            moved_in.append(name)
    except BaseException:
        undo = ([(out / n, scratch / n) for n in reversed(moved_in)]
                + [(None, out / f) for f in reversed(emptied)]
                + [(trash / r, out / r) for r in reversed(moved_out)])
        failed = 0
        for source, target in undo:
            try:
                if source is None:
                    target.mkdir()  # a gen folder removed above
                else:
                    os.rename(source, target)
            except OSError:
                failed += 1
        if failed:
            raise _NotRestored(f"writing {out} failed and {failed} of its moves could not be undone; "
                               f"the old dataset's files are in {trash}") from None
        raise


def _discard(scratch: Path | None, created: list[Path]) -> None:
    """Remove this run's scratch folder, then the folders it created, if empty."""
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break  # something else is in it now: not ours to remove


def write_dataset(out: str | Path, samples: Iterator[tuple[str, object, str, dict]],
                  write_file: Callable[[Path, object], None], card: dict, *,
                  overwrite: bool = False, total: int | None = None) -> Path:
    """Write `(file_name, payload, text, attributes)` samples into `out`, all or nothing.

    `write_file(path, payload)` writes one sample's file or folder (an image, a clip);
    `file_name` is one plain name (no "/", not hidden). `card` is stored as the card with
    the manifest added under "files". The rules for `out` and `overwrite` are in the
    module docstring.
    """
    out = Path(out)
    created = _make_folder(out)
    scratch = None
    try:
        with output_lock(out):  # one writer: every check below holds until the swap is done
            recorded = _old_manifest(out, overwrite)
            taken = {}  # top-level name -> the first kept path under it
            for kept in _plan(out, recorded).kept:
                taken.setdefault(kept.rstrip("/").split("/")[0], kept)
            scratch = Path(tempfile.mkdtemp(dir=out, prefix=SCRATCH_PREFIX))
            names = _write_samples(scratch, out, samples, write_file, card, taken, total)
            plan = _plan(out, recorded)  # again: files may have changed while the samples were written
            _swap(out, scratch, names, plan)
            shutil.rmtree(scratch, ignore_errors=True)
    except _NotRestored:
        raise
    except BaseException:
        _discard(scratch, created)
        raise
    _report_kept(out, plan.kept)
    return out


# ---------------------------------------------------------------- the toy world


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


# flag -> (largest value, unit, why)
LIMITS = {
    "n": (10_000_000, "samples", "one folder of more files is slow on every file system"),
    "size": (MAX_SIDE, "pixels", "each image is drawn in memory; 4096 x 4096 is already 48 MiB"),
    "frames": (MAX_FRAMES, "frames per clip", "each clip is drawn in memory, frames x size x size x 3 bytes"),
}


def _check_counts(**values) -> None:
    """Each value is an integer from 1 to its limit in LIMITS."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise GenError(f"--{name} must be a positive integer, got {value}")
        high, unit, why = LIMITS[name]
        if value > high:
            raise GenError(f"--{name} must be between 1 and {high} {unit}, got {value} ({why})")
