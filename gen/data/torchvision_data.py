"""Small labelled image datasets through torchvision: MNIST, Fashion-MNIST, KMNIST, CIFAR-10/100, SVHN.

Nothing is downloaded unless `download=True`. Files are found where torchvision puts
them under `root` (for MNIST: `root/MNIST/raw/train-images-idx3-ubyte` and friends).
CIFAR batches are Python pickles; torchvision opens them only after their MD5 matches
the official release, so no foreign pickle is ever loaded.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from gen.data.folders import check_channels, check_size, pil_to_array, resize_center_crop, to_model_range
from gen.errors import GenError

KNOWN = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn")

# name -> (torchvision class, where torchvision looks under root)
_SOURCES = {
    "mnist": ("MNIST", "MNIST/raw/{split}-images-idx3-ubyte"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/{split}-images-idx3-ubyte"),
    "kmnist": ("KMNIST", "KMNIST/raw/{split}-images-idx3-ubyte"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/"),
    "cifar100": ("CIFAR100", "cifar-100-python/"),
    "svhn": ("SVHN", "{split}_32x32.mat"),
}

_FASHION = (
    "a t-shirt", "trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt", "a sneaker", "a bag", "an ankle boot",
)
_KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def class_texts(name: str, classes: list[str] | None) -> list[str]:
    """The caption of each class index, as a short phrase."""
    if name in ("mnist", "svhn"):
        return [f"the digit {d}" for d in range(10)]
    if name == "fashion-mnist":
        return list(_FASHION)
    if name == "kmnist":
        return [f"the hiragana {c}" for c in _KMNIST]
    return [c.replace("_", " ") for c in classes]  # cifar10 "airplane", cifar100 "aquarium fish"


def _normalise(name) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key not in KNOWN:
        raise GenError(f"unknown torchvision dataset {name!r}; known: {', '.join(KNOWN)}")
    return key


class TorchvisionDataset(Dataset):
    """A torchvision classification dataset as `{"image", "text", "label"}` items.

    `image` is `(C, H, W)` float32 in [-1, 1]; `text` the class as a phrase ("the digit 7",
    "airplane"); `label` the class index. `train=False` gives the test split.
    """

    KNOWN = KNOWN

    def __init__(
        self, name: str, root, train: bool = True, download: bool = False, size: int | None = None, channels: int = 3
    ):
        self.name = _normalise(name)
        self.size, self.channels = check_size(size), check_channels(channels)
        self.root, self.train = Path(root).expanduser(), bool(train)
        self.data = self._open(bool(download))
        self.classes = list(getattr(self.data, "classes", None) or [str(d) for d in range(10)])  # torchvision's
        self.texts = class_texts(self.name, self.classes)  # the caption of each label

    def _open(self, download: bool):
        import torchvision.datasets as tvd

        cls_name, where = _SOURCES[self.name]
        if self.name == "svhn":
            split_kw, split = {"split": "train" if self.train else "test"}, ("train" if self.train else "test")
        else:
            split_kw, split = {"train": self.train}, ("train" if self.train else "t10k")
        not_found = (
            f"{cls_name} not found under {self.root} (looked for {self.root / where.format(split=split)}); "
            "pass --download (needs network) or point --root at a copy"
        )
        if not download and not self.root.is_dir():
            raise GenError(not_found)
        try:
            return getattr(tvd, cls_name)(str(self.root), download=download, **split_kw)
        except ImportError as err:
            package = (err.name or "scipy").split(".")[0]
            raise GenError(f"{cls_name} needs the {package} package: pip install {package}") from None
        except Exception as err:  # torchvision raises RuntimeError, OSError, URLError, ValueError...
            why = " ".join(str(err).split()) or type(err).__name__
            if download:
                raise GenError(
                    f"could not download {cls_name} into {self.root}: {why}; check the network or copy the files there"
                ) from None
            if "not found" in why.lower():
                raise GenError(not_found) from None
            raise GenError(
                f"could not read {cls_name} under {self.root}: {why}; delete its files and copy them again"
            ) from None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        image, label = self.data[i]  # PIL image, int
        label = int(label)
        pixels = resize_center_crop(to_model_range(pil_to_array(image, self.channels)), self.size)
        return {"image": pixels, "text": self.texts[label], "label": label}
