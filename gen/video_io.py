"""Video and PNG files at the library's edge: uint8 arrays in, files out, and back.

Frames are uint8 arrays `(T, H, W, 3)`. The file format follows the path:

- `clip.gif`  Pillow, loops forever, one duration per frame (GIF counts in 1/100 s,
  so the frame time is rounded to 10 ms and never below 20 ms: at most 50 fps);
- `clip.mp4`  PyAV (`pip install 'gen[video]'`), H.264 (libx264, falling back to
  MPEG-4 part 2), yuv420p; odd widths/heights are padded by repeating the last
  row/column, so a clip read back may be one pixel larger;
- `clip/` or `clip` (no suffix)  a folder of `000.png, 001.png, ...`; the frame rate is
  kept as a `fps` text chunk in the first frame. Reading takes png, jpg, jpeg, webp and
  bmp frames sorted by name (numbers compared as numbers).

`read_video` also reads webm, avi, mov and mkv through PyAV. Writers never overwrite:
an existing path is an error, and each file is written under a temporary name in the
same folder and renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, PngImagePlugin

from gen.errors import GenError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # a folder of these is a clip
PYAV_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv")
VIDEO_SUFFIXES = (*PYAV_SUFFIXES, ".gif")
WRITE_FORMATS = ".gif, .mp4, or a folder path (no suffix or a trailing '/') for PNG frames"


def import_av():
    """Import PyAV, or say how to install it."""
    try:
        import av
    except ImportError:
        raise GenError("reading or writing mp4/webm/avi/mov/mkv needs PyAV: pip install 'gen[video]'") from None
    return av


def natural_key(name: str) -> list:
    """Sort key that orders `frame2` before `frame10` (runs of digits compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """The frame images (png, jpg, jpeg, webp, bmp) of a folder, sorted by name, numbers
    compared as numbers."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ---------------------------------------------------------------- atomic, no-clobber writes


def _reserve(path: str | os.PathLike) -> tuple[Path, Path]:
    """Check `path` is free, make its parent folder, and pick a temporary sibling name."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise GenError(f"{path} already exists; pick another name or delete it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    return path, tmp


def _discard(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


def _publish(tmp: Path, path: Path) -> None:
    """Move a finished temporary file or folder to `path` without replacing anything there."""
    try:
        if tmp.is_dir():
            if path.exists() or path.is_symlink():
                raise FileExistsError(path)
            os.rename(tmp, path)
            return
        try:
            os.link(tmp, path)  # atomic and fails if `path` appeared meanwhile
        except FileExistsError:
            raise
        except OSError:  # filesystems without hard links
            if path.exists() or path.is_symlink():
                raise FileExistsError(path) from None
            os.rename(tmp, path)
            return
        tmp.unlink()
    except FileExistsError:
        _discard(tmp)
        raise GenError(f"{path} already exists; pick another name or delete it first") from None


def _write_atomically(path, write) -> Path:
    """Run `write(tmp)` then rename tmp to `path`; remove tmp if anything fails."""
    path, tmp = _reserve(path)
    try:
        write(tmp)
    except BaseException:
        _discard(tmp)
        raise
    _publish(tmp, path)
    return path


# ---------------------------------------------------------------- PNG with text chunks


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise GenError(f"image must be a uint8 array (H, W, C) with values 0..255, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) or 0 in image.shape:
        raise GenError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    return image


def write_png(path, image, text_chunks: dict | None = None) -> Path:
    """Write a uint8 image `(H, W[, C])` as PNG with `text_chunks` as text chunks.

    Values are stored as strings (tEXt, or iTXt when they are not Latin-1). Keys must be
    1-79 Latin-1 characters. Returns the path written; an existing path is an error.
    """
    image = _check_image(image)
    info = PngImagePlugin.PngInfo()
    for key, value in (text_chunks or {}).items():
        if not isinstance(key, str) or not 1 <= len(key) <= 79 or not key.isprintable() or not _latin1(key):
            raise GenError(f"PNG text key must be 1-79 printable Latin-1 characters, got {key!r}; rename it")
        info.add_text(key, value if isinstance(value, str) else str(value))
    return _write_atomically(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG", pnginfo=info))


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def read_png_text(path) -> dict:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG file, as a dict of strings."""
    path = Path(path)
    if not path.is_file():
        raise GenError(f"PNG file {path} does not exist; check the path")
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise GenError(f"{path} is a {im.format} file, not a PNG; text chunks are read from PNG files only")
            return dict(im.text)
    except OSError as err:
        raise GenError(f"could not read PNG {path}: {_one_line(err)}") from None


# ---------------------------------------------------------------- writing clips


def _check_frames(frames, fps) -> tuple[np.ndarray, float]:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise GenError(f"frames must be a uint8 array (T, H, W, 3) with values 0..255, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        raise GenError(f"frames must have shape (T, H, W, 3) with T, H, W >= 1, got {frames.shape}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0:
        raise GenError(f"fps must be a positive number, got {fps!r}")
    return frames, float(fps)


def _video_kind(path) -> str:
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    if text.endswith(("/", os.sep)) or suffix == "":
        return "folder"
    if suffix in (".gif", ".mp4"):
        return suffix[1:]
    raise GenError(f"cannot write video {text!r}: the name must end in {WRITE_FORMATS}")


def _gif_centiseconds(fps: float) -> int:
    return max(2, round(100.0 / fps))


def _write_gif(tmp: Path, frames: np.ndarray, fps: float, comment: str | None) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    ms = 10 * _gif_centiseconds(fps)
    extra = {"comment": comment.encode("utf-8")} if comment else {}
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0, **extra)


def _write_folder(tmp: Path, frames: np.ndarray, fps: float, comment: str | None) -> None:
    tmp.mkdir()
    width = max(3, len(str(len(frames) - 1)))
    for t, frame in enumerate(frames):
        info = PngImagePlugin.PngInfo()
        if t == 0:
            info.add_text("fps", repr(fps))
            if comment:
                info.add_itxt("comment", comment)
        Image.fromarray(frame).save(tmp / f"{t:0{width}d}.png", format="PNG", pnginfo=info)


def _write_mp4(tmp: Path, frames: np.ndarray, fps: float, comment: str | None) -> None:
    av = import_av()
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2  # yuv420p needs even sizes: repeat the edge
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(tmp), mode="w", format="mp4") as container:
        if comment:
            container.metadata["comment"] = comment
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "16", "preset": "medium"}
        else:
            stream.bit_rate = 20_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)


def write_video(path, frames, fps: float, comment: str | None = None) -> Path:
    """Write uint8 frames `(T, H, W, 3)` at `fps` to a .gif, an .mp4 or a folder of PNGs.

    The format follows the path (see the module docstring). Returns the path written;
    an existing path is an error, never overwritten. `comment` (text, e.g. JSON) is kept
    in the file: the GIF comment extension, the MP4 container's `comment` tag, a
    `comment` text chunk in the first PNG frame; `read_video_comment` reads it back.
    """
    frames, fps = _check_frames(frames, fps)
    kind = _video_kind(path)
    if kind == "mp4":
        import_av()  # fail before touching the disk
    writer = {"gif": _write_gif, "mp4": _write_mp4, "folder": _write_folder}[kind]
    return _write_atomically(path, lambda tmp: writer(tmp, frames, fps, comment))


def read_video_comment(path) -> str | None:
    """The comment `write_video` stored in a clip (None if there is none)."""
    path = Path(path)
    if not path.exists():
        raise GenError(f"video {path} does not exist; check the path")
    try:
        if path.is_dir():
            files = frame_files(path)
            if not files:
                return None
            with Image.open(files[0]) as im:
                return im.text.get("comment") if hasattr(im, "text") else None
        if path.suffix.lower() == ".gif":
            with Image.open(path) as im:
                value = im.info.get("comment")
                return value.decode("utf-8") if isinstance(value, bytes) else value
        with import_av().open(str(path)) as container:
            return container.metadata.get("comment")
    except GenError:
        raise
    except Exception as err:
        raise GenError(f"could not read {path}: {_one_line(err)}") from None


# ---------------------------------------------------------------- reading clips


def _read_folder(path: Path, max_frames: int | None) -> tuple[np.ndarray, float | None]:
    files = frame_files(path)
    if not files:
        raise GenError(f"frame folder {path} has no frame images ({', '.join(FRAME_SUFFIXES)}); add frames or fix the path")
    frames, fps = [], None
    for file in files[:max_frames]:
        try:
            with Image.open(file) as im:
                if not frames and "fps" in getattr(im, "text", {}):
                    fps = float(im.text["fps"])
                frames.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as err:
            raise GenError(f"could not read frame {file}: {_one_line(err)}; replace or remove it") from None
        if frames[-1].shape != frames[0].shape:
            raise GenError(
                f"frame {file} is {frames[-1].shape[1]}x{frames[-1].shape[0]} but {files[0].name} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}; all frames of a clip must have one size"
            )
    return np.stack(frames), fps


def _read_gif(path: Path, max_frames: int | None) -> tuple[np.ndarray, float | None]:
    """GIF frames at a constant rate: a frame shown k times longer than the shortest is
    repeated k times (Pillow merges identical consecutive frames when writing)."""
    with Image.open(path) as im:
        if im.format != "GIF":
            raise GenError(f"{path} is a {im.format} file, not a GIF; rename it to its real suffix")
        pairs = [(np.asarray(f.convert("RGB")), int(f.info.get("duration", 0) or 0)) for f in ImageSequence.Iterator(im)]
    durations = [d for _, d in pairs]
    base = min(durations)
    if base > 0 and all(d % base == 0 for d in durations):
        frames = [frame for frame, d in pairs for _ in range(d // base)]
        fps = 1000.0 / base
    else:
        frames = [frame for frame, _ in pairs]
        fps = 1000.0 * len(pairs) / sum(durations) if sum(durations) > 0 else None
    return np.stack(frames[:max_frames]), fps


def _read_pyav(path: Path, max_frames: int | None) -> tuple[np.ndarray, float | None]:
    av = import_av()
    frames = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise GenError(f"{path} has no video stream; pass a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise GenError(f"{path} has no decodable frames; re-encode it")
    return np.stack(frames), (float(rate) if rate else None)


def read_video(path, max_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """Read a clip: returns uint8 frames `(T, H, W, 3)` and the frame rate (None if unknown).

    `path` is a .gif, a PyAV file (mp4, webm, avi, mov, mkv) or a folder of frame images
    sorted by name. `max_frames` stops after that many frames.
    """
    path = Path(path)
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames <= 0):
        raise GenError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    if not path.exists():
        raise GenError(f"video {path} does not exist; check the path")
    if path.is_dir():
        return _read_folder(path, max_frames)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise GenError(f"cannot read video {path}: supported are {', '.join(VIDEO_SUFFIXES)} files and frame folders")
    reader = _read_gif if suffix == ".gif" else _read_pyav
    try:
        return reader(path, max_frames)
    except GenError:
        raise
    except Exception as err:  # PyAV's FFmpegError, Pillow's OSError, truncated files
        raise GenError(f"could not read video {path}: {_one_line(err)}; re-encode it or remove it") from None
