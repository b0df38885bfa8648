"""Image datasets from the Hugging Face `datasets` library, read the way `datasets` reads them:

- a `datasets.Dataset` (or `DatasetDict`) object passed to `open_dataset`;
- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`;
- a hub dataset id (`owner/name`) already in the local `datasets` cache: read offline,
  fetched from the hub only with `download=True` (`--download`).

Items are the folders' items, `{"image": (C, H, W) in [-1, 1], "text": str[, "label": int]}`:
the image is the first column of the `Image` feature type, the caption the `text` column
(or `caption_column`); with no caption column and a `ClassLabel` label, the caption is the
class name, as for class folders.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from torch.utils.data import Dataset

from gen.data.folders import check_channels, check_size, pil_to_array, resize_center_crop, to_model_range
from gen.errors import GenError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _datasets():
    try:
        import datasets
    except ImportError:
        from gen.errors import missing_package

        raise missing_package("datasets", "reading a Hugging Face dataset") from None
    return datasets


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `save_to_disk` (a Dataset's state.json, or a DatasetDict's dataset_dict.json)."""
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                      and (path / "dataset_info.json").is_file())


def is_hf_dataset(obj) -> bool:
    """A `datasets.Dataset` or `DatasetDict`, without importing datasets when it is not loaded."""
    import sys

    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(obj, (datasets.Dataset, datasets.DatasetDict))


def pick_split(data, split: str | None, where: str):
    """The split `split` (default train) of a DatasetDict; a Dataset is its own one split."""
    datasets = _datasets()
    if isinstance(data, datasets.DatasetDict):
        name = split or "train"
        if name not in data:
            raise GenError(f"--split {name}: {where} has the splits {', '.join(data)}; pass one of them")
        return data[name]
    if split is not None and data.split is not None and str(data.split) != split:
        raise GenError(f"--split {split}: {where} is the {data.split} split only; drop --split or pass {data.split}")
    return data


@contextmanager
def _offline(offline: bool):
    """`datasets` reads only its local cache while this is open (when `offline`)."""
    config = _datasets().config
    before = config.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE = before


def load_saved(path: Path, split: str | None):
    return pick_split(_datasets().load_from_disk(str(path)), split, str(path))


def load_hub(name: str, split: str | None, download: bool):
    """A hub dataset from the local cache (or, with `download`, from the hub)."""
    datasets = _datasets()
    try:
        with _offline(not download):
            data = datasets.load_dataset(name, split=split or "train")
    except (ConnectionError, FileNotFoundError) as err:
        cache = datasets.config.HF_DATASETS_CACHE
        if download:
            raise GenError(f"could not fetch the dataset {name!r} from the Hugging Face hub: {err}") from None
        raise GenError(f"dataset {name!r} is not a folder here and not in the local datasets cache ({cache}); "
                       f"check the path, or cache it once with datasets.load_dataset({name!r}) "
                       f"(gen train --download, or open_dataset(..., download=True), fetches it)") from None
    except ValueError as err:  # an unknown split
        raise GenError(f"--split {split or 'train'}: {err}") from None
    return data


class HFImageDataset(Dataset):
    """A `datasets.Dataset` of images as gen's items (see the module docstring)."""

    def __init__(self, data, size: int | None = None, channels: int = 3, caption_column: str | None = None,
                 where: str = "the dataset"):
        datasets = _datasets()
        self.data, self.size, self.channels = data, check_size(size), check_channels(channels)
        features = data.features
        images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
        if not images:
            raise GenError(f"{where} has no image column (its columns: {', '.join(features)}); gen reads images "
                           f"from a column of the datasets.Image type")
        self.image_column = images[0]
        label = features.get("label")
        self.classes = label.names if isinstance(label, datasets.ClassLabel) else None
        self.labelled = label is not None and (self.classes is not None or getattr(label, "dtype", "").startswith("int"))
        column = caption_column or "text"
        texts = [k for k, f in features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
        if column in features:
            self.caption_column = column
        elif caption_column is None and not texts:
            self.caption_column = None  # class names, or no captions
        else:
            fix = f"pass --caption-column with one of {', '.join(texts)}" if texts else "add a caption column"
            raise GenError(f"{where} has no {column!r} column for the captions (its columns: "
                           f"{', '.join(features)}); {fix}")

    def __len__(self) -> int:
        return len(self.data)

    def caption(self, i: int, row: dict | None = None) -> str:
        row = self.data[i] if row is None else row
        if self.caption_column is not None:
            text = row[self.caption_column]
            return "" if text is None else str(text)
        return self.classes[row["label"]] if self.classes is not None else ""

    def __getitem__(self, i: int) -> dict:
        row = self.data[i]
        pixels = to_model_range(pil_to_array(row[self.image_column], self.channels))
        item = {"image": resize_center_crop(pixels, self.size), "text": self.caption(i, row)}
        if self.labelled:
            item["label"] = int(row["label"])
        return item
