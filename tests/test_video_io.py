"""Video and PNG files: round trips against the arrays written, atomic no-clobber writes."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

from gen.errors import GenError
from gen.video_io import read_png_text, read_video, write_png, write_video


def palette_clip(t=5, h=9, w=7, seed=0):
    """Random frames drawn from 12 colours (GIF-exact), with frames 1 and 2 identical."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    frames = palette[rng.integers(0, 12, (t, h, w))]
    frames[2] = frames[1]
    return frames


def smooth_clip(t=6, h=16, w=16):
    """A moving colour gradient: content that lossy codecs keep well."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = [
        np.stack([(x / w * 200 + 10 * k), (y / h * 200), np.full_like(x, 40 + 20 * k)], axis=-1)
        for k in range(t)
    ]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def leftovers(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


def test_gif_round_trip_is_exact_and_keeps_fps(tmp_path):
    frames = palette_clip()
    path = write_video(tmp_path / "clip.gif", frames, fps=10)
    with Image.open(path) as im:  # independent check of the file itself
        assert im.format == "GIF" and im.info.get("loop") == 0
    back, fps = read_video(path)
    assert back.dtype == np.uint8 and back.shape == frames.shape
    np.testing.assert_array_equal(back, frames)  # identical frames 1, 2 come back as two frames
    assert fps == pytest.approx(10.0)
    assert leftovers(tmp_path) == []


def test_frame_folder_round_trip(tmp_path):
    frames = palette_clip(t=4)
    write_video(str(tmp_path / "clip") + "/", frames, fps=7.5)
    assert sorted(os.listdir(tmp_path / "clip")) == ["000.png", "001.png", "002.png", "003.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "clip" / "002.png")), frames[2])
    back, fps = read_video(tmp_path / "clip")
    np.testing.assert_array_equal(back, frames)
    assert fps == 7.5
    write_video(tmp_path / "nosuffix", frames, fps=3)  # no suffix: a folder too
    assert (tmp_path / "nosuffix").is_dir() and leftovers(tmp_path) == []


def test_frame_folder_sorts_numbers_and_has_no_fps_without_chunk(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in (1, 2, 10):
        Image.new("RGB", (4, 3), (k, 0, 0)).save(folder / f"f{k}.png")
    back, fps = read_video(folder)
    assert back[:, 0, 0, 0].tolist() == [1, 2, 10] and fps is None
    back, _ = read_video(folder, max_frames=2)
    assert len(back) == 2


def test_mp4_round_trip_within_tolerance(tmp_path):
    frames = smooth_clip()
    path = write_video(tmp_path / "clip.mp4", frames, fps=24)
    back, fps = read_video(path)
    assert back.shape == frames.shape and fps == pytest.approx(24.0)
    assert np.abs(back.astype(int) - frames).mean() < 6.0  # yuv420p halves chroma resolution
    assert read_video(path, max_frames=2)[0].shape[0] == 2
    flat = np.broadcast_to(np.array([200, 60, 30], np.uint8), (3, 16, 16, 3))
    back, _ = read_video(write_video(tmp_path / "flat.mp4", flat, fps=24))
    assert np.abs(back.astype(int) - flat).max() <= 3
    assert leftovers(tmp_path) == []


def test_mp4_odd_size_is_padded_by_one(tmp_path):
    frames = smooth_clip(t=3, h=15, w=13)
    back, _ = read_video(write_video(tmp_path / "odd.mp4", frames, fps=8))
    assert back.shape == (3, 16, 14, 3)
    assert np.abs(back[:, :15, :13].astype(int) - frames).mean() < 6.0


@pytest.mark.parametrize("name", ["clip.gif", "clip.mp4", "clip/", "clip"])
def test_never_overwrites(tmp_path, name):
    write_video(tmp_path / "clip.gif", palette_clip(), fps=5)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip.mp4").write_bytes(b"keep me")
    with pytest.raises(GenError, match="already exists"):
        write_video(str(tmp_path / name), smooth_clip(), fps=5)
    assert (tmp_path / "clip.mp4").read_bytes() == b"keep me" and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "frames, fps, match",
    [
        (np.zeros((2, 4, 4, 3), np.float32), 5, "uint8"),
        (np.zeros((4, 4, 3), np.uint8), 5, r"\(T, H, W, 3\)"),
        (np.zeros((2, 4, 4, 4), np.uint8), 5, r"\(T, H, W, 3\)"),
        (np.zeros((0, 4, 4, 3), np.uint8), 5, r"\(T, H, W, 3\)"),
        (np.zeros((2, 4, 4, 3), np.uint8), 0, "fps must be a positive number, got 0"),
    ],
)
def test_write_video_rejects_bad_input(tmp_path, frames, fps, match):
    with pytest.raises(GenError, match=match):
        write_video(tmp_path / "x.gif", frames, fps)


def test_unknown_suffix_and_missing_or_corrupt_files(tmp_path):
    with pytest.raises(GenError, match=r"clip\.avi.*\.gif, \.mp4"):
        write_video(tmp_path / "clip.avi", palette_clip(), fps=5)
    with pytest.raises(GenError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 10)
    with pytest.raises(GenError, match=r"could not read video .*bad\.mp4"):
        read_video(tmp_path / "bad.mp4")
    (tmp_path / "bad.gif").write_bytes(b"GIF89a broken")
    with pytest.raises(GenError, match=r"could not read video .*bad\.gif"):
        read_video(tmp_path / "bad.gif")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(GenError, match="cannot read video"):
        read_video(tmp_path / "notes.txt")


def test_missing_pyav_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(GenError, match=r"pip install 'gen\[video\]'"):
        write_video(tmp_path / "clip.mp4", smooth_clip(), fps=5)
    assert not (tmp_path / "clip.mp4").exists()
    write_video(tmp_path / "clip.gif", palette_clip(), fps=5)  # GIF needs no PyAV


def test_png_text_chunks_round_trip(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    chunks = {"prompt": "a red circle left of a blue square", "seed": 7, "note": "naïve – ünïcode ✓"}
    path = write_png(tmp_path / "a.png", image, chunks)
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), image)
    assert read_png_text(path) == {"prompt": chunks["prompt"], "seed": "7", "note": chunks["note"]}
    gray = write_png(tmp_path / "g.png", image[:, :, :1])
    assert read_png_text(gray) == {} and np.asarray(Image.open(gray)).shape == (5, 6)
    with pytest.raises(GenError, match="already exists"):
        write_png(path, image, {"prompt": "other"})
    assert read_png_text(path)["prompt"] == chunks["prompt"] and leftovers(tmp_path) == []


def test_png_bad_input(tmp_path):
    with pytest.raises(GenError, match="uint8"):
        write_png(tmp_path / "a.png", np.zeros((4, 4, 3)))
    with pytest.raises(GenError, match="shape"):
        write_png(tmp_path / "a.png", np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(GenError, match="PNG text key"):
        write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8), {"": "x"})
    Image.new("RGB", (2, 2)).save(tmp_path / "b.jpg")
    with pytest.raises(GenError, match="not a PNG"):
        read_png_text(tmp_path / "b.jpg")
    with pytest.raises(GenError, match="does not exist"):
        read_png_text(tmp_path / "missing.png")
    assert not (tmp_path / "a.png").exists()
