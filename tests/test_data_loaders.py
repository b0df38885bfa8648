"""Dataset loaders: folders of images and clips, torchvision sets, sklearn digits.

Pixels are checked against the files as Pillow (or sklearn) reads them, independently of
the loaders: a uint8 value v must arrive as v / 127.5 - 1.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gen.data.digits import DigitsDataset
from gen.data.folders import ImageFolderDataset, VideoFolderDataset
from gen.data.torchvision_data import KNOWN, TorchvisionDataset
from gen.errors import GenError
from gen.video_io import write_video


def expected(array_hwc) -> torch.Tensor:
    """uint8 (H, W, C) -> (C, H, W) in [-1, 1], written out independently of the loaders."""
    a = np.asarray(array_hwc, dtype=np.float64)
    return torch.from_numpy((a * 2.0 / 255.0 - 1.0).transpose(2, 0, 1)).float()


def random_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_metadata(root, lines):
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" if isinstance(r, dict) else r for r in lines))


# ---------------------------------------------------------------- images


def test_metadata_folder_pixels_text_and_records(tmp_path):
    rgb = random_rgb(4, 6)
    rgb[0, 0], rgb[0, 1] = 0, 255
    gray = np.arange(25, dtype=np.uint8).reshape(5, 5) * 10
    Image.fromarray(rgb).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(gray).save(tmp_path / "sub" / "b.png")
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "a red circle", "seed": 3}, "\n", {"file_name": "sub/b.png"}])
    ds = ImageFolderDataset(tmp_path)
    assert len(ds) == 2 and ds.classes is None
    item = ds[0]
    assert set(item) == {"image", "text"} and item["text"] == "a red circle"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 4, 6)
    torch.testing.assert_close(item["image"], expected(rgb), atol=1e-6, rtol=0)
    assert item["image"][:, 0, 0].tolist() == [-1.0] * 3 and item["image"][:, 0, 1].tolist() == [1.0] * 3
    assert ds.records[0] == {"file_name": "a.png", "text": "a red circle", "seed": 3}
    assert ds[1]["text"] == ""  # no caption given
    torch.testing.assert_close(ds[1]["image"], expected(np.repeat(gray[:, :, None], 3, axis=2)), atol=1e-6, rtol=0)
    one = ImageFolderDataset(tmp_path, channels=1)
    torch.testing.assert_close(one[1]["image"], expected(gray[:, :, None]), atol=1e-6, rtol=0)
    luma = np.asarray(Image.open(tmp_path / "a.png").convert("L"))[:, :, None]
    torch.testing.assert_close(one[0]["image"], expected(luma), atol=1e-6, rtol=0)


def test_metadata_integer_labels_are_kept(tmp_path):
    for k in range(2):
        Image.fromarray(random_rgb(3, 3, k)).save(tmp_path / f"{k}.png")
    write_metadata(tmp_path, [{"file_name": "0.png", "text": "x", "label": 4}, {"file_name": "1.png", "text": "y", "label": 1}])
    assert [ImageFolderDataset(tmp_path)[k]["label"] for k in range(2)] == [4, 1]


def test_class_folders_give_labels_and_texts(tmp_path):
    for name, count in (("dog", 1), ("cat", 2)):
        (tmp_path / name).mkdir()
        for k in range(count):
            Image.fromarray(random_rgb(4, 4, k)).save(tmp_path / name / f"{k}.png")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    assert [(ds[i]["label"], ds[i]["text"]) for i in range(3)] == [(0, "cat"), (0, "cat"), (1, "dog")]
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 4, 4) and batch["label"].tolist() == [0, 0, 1]


def test_every_image_format_matches_pillow(tmp_path):
    rgb = random_rgb(6, 5, seed=2)
    for suffix in ("jpg", "jpeg", "webp", "bmp"):
        Image.fromarray(rgb).save(tmp_path / f"x.{suffix}")
    frames = [Image.new("RGB", (5, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "x.gif", save_all=True, append_images=frames[1:])
    ds = ImageFolderDataset(tmp_path)
    assert [r["file_name"] for r in ds.records] == ["x.bmp", "x.gif", "x.jpeg", "x.jpg", "x.webp"]
    for i, record in enumerate(ds.records):
        want = np.asarray(Image.open(tmp_path / record["file_name"]).convert("RGB"))  # GIF: first frame
        torch.testing.assert_close(ds[i]["image"], expected(want), atol=1e-6, rtol=0)
    assert ds[1]["image"][:, 0, 0].tolist() == [1.0, -1.0, -1.0]  # the red first frame


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    x = ImageFolderDataset(tmp_path)[0]["image"]
    assert x[:, 0, 0].tolist() == expected(np.array([[[10, 20, 30]]]))[:, 0, 0].tolist()
    assert x[:, 1, 1].tolist() == [1.0, 1.0, 1.0]


def test_size_resizes_shorter_side_then_centre_crops(tmp_path):
    y, x = np.mgrid[0:16, 0:24]
    image = np.stack([x * 10, y * 15, (x + y) * 5], axis=-1).astype(np.uint8)  # smooth, 24 wide x 16 high
    Image.fromarray(image).save(tmp_path / "wide.png")
    ds = ImageFolderDataset(tmp_path, size=8)
    got = ds[0]["image"]
    assert got.shape == (3, 8, 8)
    reference = Image.fromarray(image).resize((12, 8), Image.BICUBIC).crop((2, 0, 10, 8))  # Pillow's own resize
    torch.testing.assert_close(got, expected(np.asarray(reference)), atol=0.03, rtol=0)
    assert ImageFolderDataset(tmp_path, size=16)[0]["image"].shape == (3, 16, 16)  # crop only
    torch.testing.assert_close(ImageFolderDataset(tmp_path, size=16)[0]["image"], expected(image[:, 4:20]))
    assert ImageFolderDataset(tmp_path, size=32, channels=1)[0]["image"].shape == (1, 32, 32)


def test_folder_errors(tmp_path):
    with pytest.raises(GenError, match=r"dataset folder .*nowhere does not exist"):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(GenError, match="is not a directory"):
        ImageFolderDataset(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenError, match="is empty"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(GenError, match=r"has no images \(png, jpg"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "cls").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "cls" / "a.png")
    with pytest.raises(GenError, match="class folder .*empty has no images"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "empty").rmdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "loose.png")
    with pytest.raises(GenError, match="mixes loose files"):
        ImageFolderDataset(tmp_path)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(GenError, match="size must be a positive integer"):
            ImageFolderDataset(tmp_path / "cls", size=bad)
    with pytest.raises(GenError, match="channels must be 3"):
        ImageFolderDataset(tmp_path / "cls", channels=2)


@pytest.mark.parametrize(
    "lines, match",
    [
        ([{"file_name": "a.png"}, "{not json\n"], "metadata.jsonl line 2 is not valid JSON"),
        ([{"text": "no name"}], 'line 1 has no "file_name"'),
        (['["a.png"]\n'], 'line 1 has no "file_name"'),
        ([{"file_name": "a.png"}, {"file_name": "gone.png"}], r"line 2: file_name 'gone.png' does not exist"),
        ([{"file_name": "notes.txt"}], r"line 1: 'notes.txt' is not one of the images"),
        (["\n"], "lists no files"),
    ],
)
def test_metadata_errors(tmp_path, lines, match):
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    write_metadata(tmp_path, lines)
    with pytest.raises(GenError, match=match):
        ImageFolderDataset(tmp_path)


def test_corrupt_image_fails_when_loaded_naming_it(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = ImageFolderDataset(tmp_path)  # indexing does not open files
    assert ds[1]["image"].shape == (3, 2, 2)
    with pytest.raises(GenError, match=r"could not read image .*bad\.png"):
        ds[0]


# ---------------------------------------------------------------- videos


def palette_clip(t, h=6, w=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, (16, 3), dtype=np.uint8)[rng.integers(0, 16, (t, h, w))] * 60


def smooth_clip(t, h=16, w=16):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([x * 12 + k * 8, y * 12, np.full_like(x, 90)], -1) for k in range(t)]).astype(np.uint8)


def as_video(frames_thwc) -> torch.Tensor:
    return expected(np.concatenate(list(frames_thwc), axis=0)).reshape(3, len(frames_thwc), *frames_thwc.shape[1:3])


def make_clips(root):
    gif, mp4, folder = palette_clip(5), smooth_clip(4), palette_clip(3, seed=1)
    write_video(root / "a.gif", gif, fps=10)
    write_video(root / "b.mp4", mp4, fps=12)
    (root / "c").mkdir()
    for t, frame in enumerate(folder):  # frame names sort by number, not by text
        Image.fromarray(frame).save(root / "c" / f"f{t * 5}.png")
    return gif, mp4, folder


def test_video_folder_reads_gif_mp4_and_frame_folders(tmp_path):
    gif, mp4, folder = make_clips(tmp_path)
    write_metadata(tmp_path, [{"file_name": n, "text": f"clip {n}"} for n in ("a.gif", "b.mp4", "c")])
    ds = VideoFolderDataset(tmp_path)
    items = [ds[i] for i in range(3)]
    assert [it["text"] for it in items] == ["clip a.gif", "clip b.mp4", "clip c"]
    assert [tuple(it["video"].shape) for it in items] == [(3, 5, 6, 8), (3, 4, 16, 16), (3, 3, 6, 8)]
    torch.testing.assert_close(items[0]["video"], as_video(gif), atol=1e-6, rtol=0)
    torch.testing.assert_close(items[2]["video"], as_video(folder), atol=1e-6, rtol=0)
    assert (items[1]["video"] - as_video(mp4)).abs().mean() < 0.05  # lossy, within ~6/255
    short = VideoFolderDataset(tmp_path, frames=3, size=4, channels=1)
    assert [tuple(short[i]["video"].shape) for i in range(3)] == [(1, 3, 4, 4)] * 3
    gray = VideoFolderDataset(tmp_path, channels=1)[2]["video"]
    luma = np.stack([np.asarray(Image.fromarray(f).convert("L")) for f in folder])[:, :, :, None]
    torch.testing.assert_close(gray, expected(np.concatenate(list(luma))).reshape(1, 3, 6, 8), atol=1e-6, rtol=0)


def test_video_frames_longer_than_clip_names_file_and_count(tmp_path):
    make_clips(tmp_path)
    ds = VideoFolderDataset(tmp_path, frames=4)
    assert ds[0]["video"].shape[1] == 4 and ds[1]["video"].shape[1] == 4
    with pytest.raises(GenError, match=r"clip .*c has 3 frames but frames=4"):
        ds[2]
    for bad in (0, -1, 1.5):
        with pytest.raises(GenError, match="frames must be a positive integer"):
            VideoFolderDataset(tmp_path, frames=bad)


def test_video_class_folders_and_errors(tmp_path):
    (tmp_path / "jump").mkdir()
    (tmp_path / "run").mkdir()
    write_video(tmp_path / "jump" / "x.gif", palette_clip(2), fps=5)
    write_video(tmp_path / "run" / "y", palette_clip(2), fps=5)  # a frame folder inside a class
    ds = VideoFolderDataset(tmp_path)
    assert ds.classes == ["jump", "run"] and [ds[i]["label"] for i in range(2)] == [0, 1]
    assert ds[1]["text"] == "run" and ds[1]["video"].shape == (3, 2, 6, 8)
    (tmp_path / "run" / "z.mp4").write_bytes(b"not a video at all")
    with pytest.raises(GenError, match=r"could not read video .*z\.mp4"):
        VideoFolderDataset(tmp_path)[2]
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "a.txt").write_text("x")
    with pytest.raises(GenError, match=r"has no videos \(mp4"):
        VideoFolderDataset(tmp_path / "nothing")
    with pytest.raises(GenError, match="does not exist"):
        VideoFolderDataset(tmp_path / "missing")


# ---------------------------------------------------------------- torchvision and digits


def write_idx(folder, prefix, images, labels):
    """MNIST's raw idx format: big-endian magic (0x0803 images, 0x0801 labels), sizes, bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(np.array([0x803, n, h, w], ">i4").tobytes() + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([0x801, n], ">i4").tobytes() + labels.tobytes())


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def no_network(self):
        raise AssertionError("download attempted")

    for cls in (tvd.MNIST, tvd.FashionMNIST):
        monkeypatch.setattr(cls, "download", no_network)
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], np.uint8), np.array([3, 1], np.uint8)
    for sub in ("MNIST", "FashionMNIST"):
        write_idx(tmp_path / sub / "raw", "train", train, labels[0])
        write_idx(tmp_path / sub / "raw", "t10k", test, labels[1])
    return tmp_path, (train, test), labels


def test_mnist_pixels_and_labels_match_the_idx_files(fake_mnist):
    root, (train, test), (train_labels, test_labels) = fake_mnist
    ds = TorchvisionDataset("mnist", root, channels=1)
    assert len(ds) == 3
    for i in range(3):
        item = ds[i]
        assert item["label"] == train_labels[i] and item["text"] == f"the digit {train_labels[i]}"
        torch.testing.assert_close(item["image"], expected(train[i][:, :, None]), atol=1e-6, rtol=0)
    rgb = TorchvisionDataset("MNIST", root, train=False, size=14)
    assert len(rgb) == 2 and rgb[1]["label"] == 1 and rgb[0]["image"].shape == (3, 14, 14)
    fashion = TorchvisionDataset("fashion_mnist", root)
    assert fashion[2]["text"] == "an ankle boot" and fashion[2]["label"] == 9


def test_torchvision_missing_unknown_and_corrupt(fake_mnist, tmp_path):
    root, _, _ = fake_mnist
    for where in (tmp_path / "elsewhere", root / "FashionMNIST"):
        with pytest.raises(GenError, match=r"MNIST not found under .*; pass --download \(needs network\) or point --root"):
            TorchvisionDataset("mnist", where)
    with pytest.raises(GenError, match="known: " + ", ".join(KNOWN)):
        TorchvisionDataset("imagenet", root)
    (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(GenError, match=r"could not read MNIST under"):
        TorchvisionDataset("mnist", root, train=False)


def test_digits_match_sklearn():
    from sklearn.datasets import load_digits

    reference = load_digits()
    ds = DigitsDataset(channels=1)
    assert len(ds) == len(reference.target) == 1797
    for i in (0, 1, 500, 1796):
        item = ds[i]
        assert item["label"] == reference.target[i] and item["text"] == f"the digit {reference.target[i]}"
        want = torch.from_numpy(reference.images[i] / 8.0 - 1.0).float()[None]
        torch.testing.assert_close(item["image"], want, atol=1e-6, rtol=0)
    rgb = DigitsDataset(size=16)[3]["image"]
    assert rgb.shape == (3, 16, 16) and rgb.min() >= -1 and rgb.max() <= 1
    assert torch.equal(rgb[0], rgb[2])


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(GenError, match=r"pip install 'gen\[digits\]'"):
        DigitsDataset()
