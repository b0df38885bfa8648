"""scikit-learn's bundled handwritten digits: 1,797 grayscale 8x8 images, no download.

The smallest real dataset there is: fine for smoke tests and for checking that a model
learns anything at all. Pixels count ink from 0 to 16 and map linearly to [-1, 1].
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from gen.data.folders import check_channels, check_size, resize_center_crop
from gen.errors import GenError


def load_digit_arrays():
    """sklearn's `load_digits()` images `(N, 8, 8)` (0..16) and targets `(N,)`."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise GenError("the digits dataset needs scikit-learn: pip install 'gen[digits]'") from None
    bunch = load_digits()
    return bunch.images, bunch.target


class DigitsDataset(Dataset):
    """sklearn's 8x8 digits as `{"image": (C, H, W) in [-1, 1], "text": "the digit N", "label": N}`."""

    def __init__(self, size: int | None = None, channels: int = 3):
        self.size, self.channels = check_size(size), check_channels(channels)
        images, targets = load_digit_arrays()
        self.images = torch.from_numpy(images).to(torch.float32) / 8.0 - 1.0  # (N, 8, 8), 0..16 -> [-1, 1]
        self.labels = [int(t) for t in targets]
        self.classes = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        x = self.images[i][None].repeat(self.channels, 1, 1)  # (C, 8, 8), a copy
        label = self.labels[i]
        return {"image": resize_center_crop(x, self.size), "text": f"the digit {label}", "label": label}
