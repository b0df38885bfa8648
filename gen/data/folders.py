"""Image and video datasets read from folders, plus the pixel conventions every loader shares.

Folder layout (the Hugging Face `imagefolder` convention, read as `datasets` reads it):

- split folders `root/train/`, `root/test/`, `root/validation/` (also `training`, `val`,
  `dev`, `eval`, ...): one of them is the dataset (`split`, default train), laid out as below;
- `metadata.jsonl`, one JSON object a line: `{"file_name": "a.png", "text": "a red
  circle", ...}`, or `metadata.csv` with a header line (`file_name,text,...`). `file_name`
  is relative to the metadata file's folder; the caption is the `text` column, or the
  column `caption_column` names; every other column is kept in `dataset.records[i]`. If
  every row has an integer `label`, items carry it;
- otherwise class folders `CLASS/*`: `label` indexes the sorted class names
  (`dataset.classes`) and the caption is the class name;
- otherwise loose files: no label, empty caption.

Pixels: uint8 files become float32 in [-1, 1] (`x / 127.5 - 1`). `size` resizes the shorter
side with antialiased bicubic filtering and centre-crops to `size x size`; there is no
random flip, because captions say "left of" and "right of".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from gen.errors import GenError
from gen.video_io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, frame_files, read_video

# ---------------------------------------------------------------- shared pixel conventions


def check_size(size) -> int | None:
    """`size` is None (native size) or a positive int."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise GenError(f"size must be a positive integer (pixels) or None for the native size, got {size!r}")
    return size


def check_channels(channels) -> int:
    """`channels` is 3 (RGB) or 1 (grayscale)."""
    if channels not in (1, 3) or isinstance(channels, bool):
        raise GenError(f"channels must be 3 (RGB) or 1 (grayscale), got {channels!r}")
    return channels


def pil_to_array(image: Image.Image, channels: int) -> np.ndarray:
    """A PIL image as uint8 `(H, W, channels)`: RGB, or ITU-R 601 luma for 1 channel.

    Transparent images are composited over white; 16-bit grayscale keeps its top 8 bits.
    """
    if image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[:, :, None] if channels == 1 else array


def to_model_range(array: np.ndarray) -> torch.Tensor:
    """uint8 `(..., H, W, C)` -> float32 `(..., C, H, W)` in [-1, 1]."""
    x = torch.from_numpy(np.asarray(array).astype(np.float32)) / 127.5 - 1.0  # astype copies
    return x.movedim(-1, -3)


def resize_center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize `(..., C, H, W)` so the shorter side is `size` (antialiased bicubic, clamped
    to [-1, 1]), then centre-crop to `size x size`. `size=None` returns `x` unchanged."""
    if size is None:
        return x
    if min(x.shape[-2:]) != size:
        x = TF.resize(x, [size], interpolation=InterpolationMode.BICUBIC, antialias=True).clamp_(-1.0, 1.0)
    if tuple(x.shape[-2:]) != (size, size):
        x = TF.center_crop(x, [size, size])
    return x.contiguous()


def load_image(path: Path, channels: int) -> np.ndarray:
    """Read one image file (first frame of a GIF, EXIF rotation applied) as uint8 `(H, W, C)`."""
    try:
        with Image.open(path) as im:
            return pil_to_array(ImageOps.exif_transpose(im), channels)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        why = " ".join(str(err).split()) or type(err).__name__
        raise GenError(f"could not read image {path}: {why}; replace the file or remove it from the dataset") from None


# ---------------------------------------------------------------- indexing a folder


def _check_root(root) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise GenError(f"dataset folder {root} does not exist; check the path")
    if not root.is_dir():
        raise GenError(f"dataset folder {root} is not a directory; pass the folder that holds the files")
    return root


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


# Folder names `datasets` reads as splits (its SPLIT_KEYWORDS), by the split they name.
SPLIT_FOLDERS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                 "test": ("test", "testing", "eval", "evaluation")}
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def split_folders(root: Path) -> dict[str, Path]:
    """The split folders directly under `root` ({"train": root/"train", ...}), named as
    `datasets` names them ("training" is train, "val" validation, "eval" test, ...)."""
    names = {p.name.lower(): p for p in _visible(root) if p.is_dir()}
    return {split: names[k] for split, keys in SPLIT_FOLDERS.items() for k in keys if k in names}


def _metadata_file(folder: Path) -> Path | None:
    found = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise GenError(f"{folder} has both metadata.jsonl and metadata.csv; keep one")
    return found[0] if found else None


def _typed_column(values: list[str]) -> list:
    """A CSV column as ints, else floats, else the strings (as pandas, and so datasets, infer it)."""
    for kind in (int, float):
        try:
            return [kind(v) for v in values]
        except ValueError:
            pass
    return values


def _metadata_rows(meta: Path) -> list[tuple[int, object]]:
    """(line number, row) for each row of metadata.jsonl (a JSON object a line) or metadata.csv
    (a header, then one row a file)."""
    import csv
    import io

    try:
        text = meta.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise GenError(f"{meta} is not UTF-8 text; save it as UTF-8") from None
    if meta.suffix == ".csv":
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
        if not header or "file_name" not in header:
            raise GenError(f"{meta} has no file_name column; its first line must name the columns, e.g. file_name,text")
        for number, row in rows:
            if len(row) != len(header):
                raise GenError(f"{meta} line {number} has {len(row)} fields, the header {len(header)}; "
                               f"quote fields that hold commas")
        columns = {name: _typed_column([row[k] for _, row in rows]) for k, name in enumerate(header)}
        columns["file_name"] = [row[header.index("file_name")] for _, row in rows]
        return [(number, {name: columns[name][i] for name in header}) for i, (number, _) in enumerate(rows)]
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError:
            raise GenError(
                f"{meta} line {number} is not valid JSON; each line must be an object like "
                '{"file_name": "a.png", "text": "..."}'
            ) from None
    return out


def _read_metadata(meta: Path, is_item, what: str) -> list[dict]:
    folder = meta.parent
    records = []
    for number, record in _metadata_rows(meta):
        if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
            raise GenError(f'{meta} line {number} has no "file_name" string; add the path relative to {folder}')
        path = folder / record["file_name"]
        if not path.exists():
            raise GenError(
                f"{meta} line {number}: file_name {record['file_name']!r} does not exist under {folder}; "
                "fix the name or add the file"
            )
        if not is_item(path):
            raise GenError(f"{meta} line {number}: {record['file_name']!r} is not one of the {what}; list only those")
        records.append(record)
    if not records:
        raise GenError(f"{meta} lists no files; add one row per file or remove it")
    return records


def _caption_key(meta: Path, records: list[dict], caption_column: str | None) -> str:
    """The metadata column that holds the captions: `caption_column`, by default "text".
    A metadata file with no such column but other text columns is an error naming them;
    one with no text column at all gives empty captions (unconditional data)."""
    column = caption_column or "text"
    if any(column in r for r in records):
        return column
    columns = list(dict.fromkeys(k for r in records for k in r))
    texts = [k for k in columns if k != "file_name" and any(isinstance(r.get(k), str) for r in records)]
    if caption_column is not None or texts:
        fix = f"pass --caption-column with one of {', '.join(texts)}" if texts else "add a caption column"
        raise GenError(f"{meta} has no {column!r} column for the captions (its columns: {', '.join(columns)}); "
                       f"{fix}")
    return column


def index_folder(root, is_item, what: str, split: str | None = None,
                 caption_column: str | None = None) -> tuple[Path, list[dict], list[str] | None, bool, str]:
    """Find the items of a dataset folder: `(folder, records, classes, labelled, caption_key)`.

    The folder is `root`, or its split folder `split` (default train) where `root` holds
    split folders (train/, test/, validation/, as `datasets` reads them). Each record has
    `file_name` (relative to the folder), the caption under `caption_key`, and `label` when
    `labelled`; metadata records (metadata.jsonl or metadata.csv) are kept as written.
    `is_item(path)` says whether a path is one item (an image, a clip); `what` names the
    kind of item in error messages.
    """
    root = _check_root(root)
    splits = {} if _metadata_file(root) else split_folders(root)
    if splits:
        if (split or "train") not in splits:
            raise GenError(f"--split {split or 'train'}: {root} has the split folders {', '.join(splits)}; "
                           f"pass one of them")
        root = splits[split or "train"]
    elif split not in (None, "train"):
        raise GenError(f"--split {split}: {root} has no split folders (train/, test/, validation/), only the "
                       f"one split, train")
    meta = _metadata_file(root)
    if meta is not None:
        records = _read_metadata(meta, is_item, what)
        labelled = all(type(r.get("label")) is int for r in records)
        return root, records, None, labelled, _caption_key(meta, records, caption_column)
    if caption_column not in (None, "text"):
        raise GenError(f"--caption-column {caption_column}: {root} has no metadata.jsonl or metadata.csv, so its "
                       f"captions are its class folder names; drop --caption-column or add a metadata file")
    entries = _visible(root)
    if not entries:
        raise GenError(f"dataset folder {root} is empty; add {what}, in class folders or listed in a metadata.jsonl")
    loose = [p for p in entries if is_item(p)]
    folders = [p for p in entries if p.is_dir() and not is_item(p)]
    if loose and folders:
        raise GenError(
            f"dataset folder {root} mixes loose files ({loose[0].name}) and class folders ({folders[0].name}); "
            "move the files into class folders or add a metadata.jsonl"
        )
    if loose:
        return root, [{"file_name": p.name, "text": ""} for p in loose], None, False, "text"
    records, classes = [], []
    for folder in folders:
        items = [p for p in _visible(folder) if is_item(p)]
        if not items:
            raise GenError(f"class folder {folder} has no {what}; add some or remove the folder")
        for p in items:
            records.append({"file_name": f"{folder.name}/{p.name}", "text": folder.name, "label": len(classes)})
        classes.append(folder.name)
    if not records:
        others = len([p for p in entries if p.is_file()])
        raise GenError(f"dataset folder {root} has no {what} ({others} other files); add some or check the path")
    return root, records, classes, True, "text"


def _item(record: dict, labelled: bool, pixels: torch.Tensor, key: str, caption_key: str = "text") -> dict:
    text = record.get(caption_key)
    item = {key: pixels, "text": "" if text is None else str(text)}
    if labelled:
        item["label"] = record["label"]
    return item


# ---------------------------------------------------------------- the datasets


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _is_clip(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in VIDEO_SUFFIXES
    return path.is_dir() and bool(frame_files(path))


class ImageFolderDataset(Dataset):
    """Images with captions from a folder: `metadata.jsonl` captions, or class folders.

    Items: `{"image": (C, H, W) float32 in [-1, 1], "text": str[, "label": int]}`.
    `records[i]` is the raw metadata dict of item i; `classes` the class names (or None).
    """

    def __init__(self, root, size: int | None = None, channels: int = 3, split: str | None = None,
                 caption_column: str | None = None):
        self.size, self.channels = check_size(size), check_channels(channels)
        self.root, self.records, self.classes, self._labelled, self.caption_key = index_folder(
            root, _is_image, f"images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})", split, caption_column
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        pixels = to_model_range(load_image(self.root / record["file_name"], self.channels))
        return _item(record, self._labelled, resize_center_crop(pixels, self.size), "image", self.caption_key)

    def caption(self, i: int) -> str:
        text = self.records[i].get(self.caption_key)
        return "" if text is None else str(text)


class VideoFolderDataset(Dataset):
    """Clips with captions from a folder: video files (mp4, webm, avi, mov, mkv, gif) or
    folders of frame images, captioned by `metadata.jsonl` or by class folders.

    Items: `{"video": (C, T, H, W) float32 in [-1, 1], "text": str[, "label": int]}`.
    `frames=N` keeps the first N frames of each clip (a shorter clip is an error).
    """

    def __init__(self, root, frames: int | None = None, size: int | None = None, channels: int = 3,
                 split: str | None = None, caption_column: str | None = None):
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames <= 0):
            raise GenError(f"frames must be a positive integer or None for whole clips, got {frames!r}")
        self.frames, self.size, self.channels = frames, check_size(size), check_channels(channels)
        what = f"videos ({', '.join(s[1:] for s in VIDEO_SUFFIXES)} or folders of frame images)"
        self.root, self.records, self.classes, self._labelled, self.caption_key = index_folder(
            root, _is_clip, what, split, caption_column)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        path = self.root / record["file_name"]
        clip, _ = read_video(path, max_frames=self.frames)  # (T, H, W, 3) uint8
        if self.frames is not None and len(clip) < self.frames:
            raise GenError(
                f"clip {path} has {len(clip)} frames but frames={self.frames} were asked for; lower --frames or drop the clip"
            )
        if self.channels == 1:
            clip = np.stack([pil_to_array(Image.fromarray(frame), 1) for frame in clip])
        pixels = resize_center_crop(to_model_range(clip), self.size)  # (T, C, H, W)
        return _item(record, self._labelled, pixels.transpose(0, 1).contiguous(), "video",  # (C, T, H, W)
                     self.caption_key)
