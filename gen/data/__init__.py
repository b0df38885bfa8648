"""One dataset interface for training and evaluation.

Every dataset is a map-style torch Dataset whose items are dicts: images as
`{"image": (C, H, W), "text": str, ...}`, clips as `{"video": (C, T, H, W), "text": str,
...}`, pixels in [-1, 1]; `label` where the data has classes, `attributes` for the toy
world. `open_dataset` resolves a name or a folder:

    toy, toy-video                         the procedural toy world (gen.toyworld)
    toy-frame0                             frame 0 of toy clips, with the clips' captions
    mnist, fashion-mnist, kmnist, cifar10,
    cifar100, svhn                         torchvision, read from --root
    digits                                 scikit-learn's bundled 8x8 digits
    PATH                                   an image folder (Hugging Face imagefolder:
                                           split folders, metadata.jsonl or metadata.csv
                                           with file_name and a caption column, or
                                           class subfolders), a `save_to_disk` folder, or
                                           with video=True a folder of clips or frame folders
    OWNER/NAME                             a hub dataset in the local `datasets` cache
                                           (fetched only with download=True)
    a datasets.Dataset or DatasetDict      its images and captions
"""

from __future__ import annotations

from pathlib import Path

from gen.errors import GenError

TOY = ("toy", "toy-video", "toy-frame0")
OTHER = ("digits",)


def known_names() -> tuple[str, ...]:
    from gen.data.torchvision_data import TorchvisionDataset

    return TOY + tuple(TorchvisionDataset.KNOWN) + OTHER


def _default(value, default):
    return default if value is None else value


def open_dataset(name, *, size: int | None = None, channels: int = 3, n: int | None = None,
                 seed: int = 0, frames: int | None = None, fps: float | None = None,
                 root: str | None = None, train: bool = True, download: bool = False,
                 video: bool = False, kind: str | None = None, split: str | None = None,
                 caption_column: str | None = None):
    """The dataset called `name` (see the module docstring), or the folder at `name`.
    `kind` restricts the toy world to one kind of scene (single, wearing, relation, count);
    `split` picks a split of a folder or `datasets` dataset (default train), and
    `caption_column` the metadata column that holds the captions (default text)."""
    if not isinstance(name, (str, Path)):
        from gen.data import hf

        if not hf.is_hf_dataset(name):
            raise GenError(f"a dataset is a name, a folder or a datasets.Dataset, got {type(name).__name__}")
        if video:
            raise GenError("video datasets from the datasets library are not read yet; write the clips to a folder")
        return hf.HFImageDataset(hf.pick_split(name, split, "the dataset"), size=size, channels=channels,
                                 caption_column=caption_column)
    name = str(name)
    if name == "toy":
        from gen.data.toy import ToyImageDataset

        return ToyImageDataset(n=_default(n, 100_000), size=_default(size, 64), seed=seed, channels=channels,
                               kind=kind)
    if name == "toy-video":
        from gen.data.toy import ToyVideoDataset

        return ToyVideoDataset(n=_default(n, 10_000), size=_default(size, 32), frames=_default(frames, 16),
                               fps=_default(fps, 8.0), seed=seed, channels=channels)
    if name == "toy-frame0":
        from gen.data.toy import ToyFirstFrameDataset

        return ToyFirstFrameDataset(n=_default(n, 100_000), size=_default(size, 32), seed=seed, channels=channels)
    if name == "digits":
        from gen.data.digits import DigitsDataset

        return DigitsDataset(size=size, channels=channels)
    from gen.data.torchvision_data import TorchvisionDataset

    if name.lower() in TorchvisionDataset.KNOWN:
        return TorchvisionDataset(name.lower(), root=root or "data", train=train, download=download,
                                  size=size, channels=channels)
    from gen.data import hf

    path = Path(name).expanduser()
    if path.is_dir() and hf.is_saved_dataset(path):
        if video:
            raise GenError(f"{path} is a datasets save_to_disk folder; video datasets from it are not read yet")
        return hf.HFImageDataset(hf.load_saved(path, split), size=size, channels=channels,
                                 caption_column=caption_column, where=str(path))
    if not path.exists() and hf.HUB_ID.fullmatch(name) and not video and _has_datasets():
        return hf.HFImageDataset(hf.load_hub(name, split, download), size=size, channels=channels,
                                 caption_column=caption_column, where=name)
    if path.exists() or "/" in name or name.startswith("."):
        if video:
            from gen.data.folders import VideoFolderDataset

            return VideoFolderDataset(name, frames=frames, size=size, channels=channels, split=split,
                                      caption_column=caption_column)
        from gen.data.folders import ImageFolderDataset

        return ImageFolderDataset(name, size=size, channels=channels, split=split, caption_column=caption_column)
    raise GenError(f"unknown dataset {name!r}; known: {', '.join(known_names())}, or a folder path")


def _has_datasets() -> bool:
    import importlib.util

    return importlib.util.find_spec("datasets") is not None


def collate(items: list[dict]) -> dict:
    """Batch dataset items: tensors stacked, numbers as tensors, the rest as lists."""
    import torch

    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out
