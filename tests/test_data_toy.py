"""The toy world as torch datasets, and the dataset registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gen.data import collate, known_names, open_dataset
from gen.errors import GenError
from gen.toyworld import toy_clip, toy_image


def test_toy_images_are_tensors_in_model_range():
    ds = open_dataset("toy", size=24, n=10, seed=4)
    item = ds[3]
    s = toy_image(3, 24, seed=4)
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    want = torch.from_numpy(s.pixels.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
    assert torch.equal(item["image"], want)
    assert item["text"] == s.caption and item["attributes"] == s.attributes
    assert len(ds) == 10
    with pytest.raises(IndexError):
        ds[10]


def test_toy_grayscale_matches_pillow_luma():
    from PIL import Image

    item = open_dataset("toy", size=16, n=2, channels=1)[1]
    luma = np.asarray(Image.fromarray(toy_image(1, 16).pixels).convert("L"))
    assert item["image"].shape == (1, 16, 16)
    assert torch.equal(item["image"][0], torch.from_numpy(luma.astype(np.float32) / 127.5 - 1))


def test_toy_video_items_are_channels_first_clips():
    ds = open_dataset("toy-video", size=16, frames=5, fps=10.0, n=4)
    item = ds[2]
    s = toy_clip(2, 16, frames=5, fps=10.0)
    assert item["video"].shape == (3, 5, 16, 16)
    assert torch.equal(item["video"][:, 4], torch.from_numpy(s.pixels[4].astype(np.float32) / 127.5 - 1).permute(2, 0, 1))


def test_toy_first_frames_are_frame_0_of_the_clips_with_their_captions():
    ds = open_dataset("toy-frame0", size=16, n=6, seed=3)
    for i in (0, 5):
        item, clip = ds[i], toy_clip(i, 16, frames=8, fps=4.0, seed=3)  # any length and rate: the same frame 0
        assert item["image"].shape == (3, 16, 16) and item["text"] == clip.caption
        want = torch.from_numpy(clip.pixels[0].astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
        assert torch.equal(item["image"], want)
    assert len(ds) == 6 and "toy-frame0" in known_names()


def test_collate_batches_a_dataloader():
    ds = open_dataset("toy", size=8, n=6)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 8, 8)
    assert len(batch["text"]) == 4 and isinstance(batch["attributes"][0], dict)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(GenError, match="unknown dataset 'imagenet'; known: toy, toy-video, toy-frame0, mnist"):
        open_dataset("imagenet")
    assert {"toy", "toy-video", "mnist", "cifar10", "digits"} <= set(known_names())


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=0), "size must be a positive integer"),
    (dict(n=-1), "n must be a positive integer"),
    (dict(channels=2), "channels must be"),
])
def test_bad_toy_arguments(kwargs, message):
    with pytest.raises(GenError, match=message):
        open_dataset("toy", **kwargs)


def test_toy_images_of_one_kind():
    ds = open_dataset("toy", size=8, n=20, kind="wearing")
    assert {ds[i]["attributes"]["kind"] for i in range(20)} == {"wearing"}
    with pytest.raises(GenError, match="unknown scene kind 'party'; known: single, wearing, relation, count"):
        open_dataset("toy", kind="party")
