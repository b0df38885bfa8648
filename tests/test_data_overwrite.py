"""`gen data --overwrite` removes only the files gen data wrote and nobody changed since.

The reference for "what gen wrote" is independent of the code under test: hashlib over
the bytes on disk, and the toy world's own renders (`toy_image`, `toy_clip`).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gen.cli import main
from gen.toyworld import toy_clip, toy_image

CARD, METADATA = "gen-dataset.json", "metadata.jsonl"


def _toy(out: Path, n: int = 2, *extra: str) -> list[str]:
    return ["data", "toy", "--n", str(n), "--size", "16", "--out", str(out), *extra]


def _clips(out: Path, n: int = 2, frames: int = 3, *extra: str) -> list[str]:
    return ["data", "toy-video", "--n", str(n), "--size", "16", "--frames", str(frames), "--out", str(out), *extra]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) by relative name, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _append_metadata(out: Path, file_name: str) -> None:
    with open(out / METADATA, "a", encoding="utf-8") as f:
        f.write(json.dumps({"file_name": file_name, "text": "a user's caption"}) + "\n")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METADATA).read_text().splitlines()]


def _assert_toy_images(out: Path, n: int, seed: int) -> None:
    assert [r["file_name"] for r in _records(out)] == [f"{i:06d}.png" for i in range(n)]
    for i in range(n):
        assert np.array_equal(np.asarray(Image.open(out / f"{i:06d}.png")), toy_image(i, 16, seed=seed).pixels)


def _no_scratch(out: Path) -> bool:
    return not [p for p in out.iterdir() if p.name.startswith(".gen-data-")]


@pytest.fixture
def victim(tmp_path) -> Path:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "important.txt").write_text("precious")
    return folder


# --- the manifest ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [_toy, _clips], ids=["images", "frame-folders"])
def test_the_card_lists_every_written_file_with_its_sha256(tmp_path, argv):
    out = tmp_path / "ds"
    assert main(argv(out)) == 0
    files = json.loads((out / CARD).read_text())["files"]
    on_disk = {name: hashlib.sha256(data).hexdigest() for name, data in _snapshot(out).items()
               if name not in (CARD, METADATA)}
    assert files == on_disk and len(files) == (2 if argv is _toy else 2 * 3)


# --- the normal overwrite --------------------------------------------------------------


def test_overwrite_replaces_the_old_images(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_toy(out, 3)) == 0
    assert main(_toy(out, 2, "--seed", "1", "--overwrite")) == 0
    _assert_toy_images(out, 2, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", CARD, METADATA]
    assert "kept" not in capsys.readouterr().err


def test_overwrite_replaces_the_old_frame_folder_clips(tmp_path, capsys):
    out = tmp_path / "clips"
    assert main(_clips(out, 2, 3)) == 0
    assert main(_clips(out, 1, 2, "--seed", "1", "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000", CARD, METADATA]  # 000001/ emptied and removed
    want = toy_clip(0, 16, frames=2, fps=8.0, seed=1).pixels
    frames = sorted((out / "000000").iterdir())
    assert [p.name for p in frames] == ["000.png", "001.png"]
    assert all(np.array_equal(np.asarray(Image.open(p)), want[t]) for t, p in enumerate(frames))
    assert "kept" not in capsys.readouterr().err


# --- metadata.jsonl is never trusted for deletion ------------------------------------


def test_a_file_name_pointing_outside_is_not_deleted(tmp_path, victim):
    out = tmp_path / "ds"
    assert main(_toy(out)) == 0
    _append_metadata(out, "../victim")
    _append_metadata(out, "../victim/important.txt")
    assert main(_toy(out, 2, "--overwrite")) == 0
    assert (victim / "important.txt").read_text() == "precious"
    _assert_toy_images(out, 2, seed=0)  # and metadata.jsonl is gen's again


def test_an_absolute_file_name_is_not_deleted(tmp_path, victim):
    out = tmp_path / "ds"
    assert main(_toy(out)) == 0
    _append_metadata(out, str(victim.resolve()))
    _append_metadata(out, str((victim / "important.txt").resolve()))
    assert main(_toy(out, 2, "--overwrite")) == 0
    assert (victim / "important.txt").read_text() == "precious"


def test_dot_dot_does_not_empty_the_parent(tmp_path):
    parent = tmp_path / "parent"
    out = parent / "ds"
    assert main(_toy(out)) == 0
    (parent / "sibling.txt").write_text("keep me")
    _append_metadata(out, "..")
    assert main(_toy(out, 2, "--overwrite")) == 0
    assert (parent / "sibling.txt").read_text() == "keep me" and out.is_dir()


def test_dot_does_not_delete_the_users_files_in_out(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_toy(out)) == 0
    (out / "notes.txt").write_text("mine")
    _append_metadata(out, ".")
    assert main(_toy(out, 2, "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine"
    err = capsys.readouterr().err
    assert "kept 1 file" in err and "notes.txt" in err and err.count("\n") == 1


def test_a_users_captioned_file_added_to_the_dataset_is_kept(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_toy(out)) == 0
    Image.new("RGB", (16, 16), "red").save(out / "my_photo.png")
    mine = (out / "my_photo.png").read_bytes()
    _append_metadata(out, "my_photo.png")  # the imagefolder way
    assert main(_toy(out, 2, "--overwrite")) == 0
    assert (out / "my_photo.png").read_bytes() == mine
    assert "my_photo.png" in capsys.readouterr().err
    assert "my_photo.png" not in [r["file_name"] for r in _records(out)]  # metadata.jsonl is gen's own


# --- the manifest itself is checked, not trusted --------------------------------------


def test_manifest_entries_outside_out_are_never_deleted(tmp_path, victim):
    out = tmp_path / "ds"
    assert main(_toy(out)) == 0
    (out / "link").symlink_to(victim, target_is_directory=True)
    digest = hashlib.sha256(b"precious").hexdigest()
    card = json.loads((out / CARD).read_text())
    for name in ["../victim/important.txt", str((victim / "important.txt").resolve()), "link/important.txt"]:
        card["files"][name] = digest  # the right hash: only the name's rules protect the file
    (out / CARD).write_text(json.dumps(card))
    assert main(_toy(out, 2, "--overwrite")) == 0
    assert (victim / "important.txt").read_text() == "precious"
    assert (out / "link").is_symlink()  # kept: gen never wrote it


def test_a_generated_file_edited_since_is_kept(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_toy(out, 3)) == 0
    Image.new("RGB", (16, 16), "blue").save(out / "000002.png")
    edited = (out / "000002.png").read_bytes()
    assert main(_toy(out, 2, "--seed", "1", "--overwrite")) == 0
    assert (out / "000002.png").read_bytes() == edited
    _assert_toy_images(out, 2, seed=1)
    assert "000002.png" in capsys.readouterr().err


def test_a_users_file_inside_a_clip_folder_keeps_the_folder(tmp_path, capsys):
    out = tmp_path / "clips"
    assert main(_clips(out, 2, 3)) == 0
    (out / "000001" / "note.txt").write_text("mine")
    assert main(_clips(out, 1, 3, "--overwrite")) == 0
    assert sorted(p.name for p in (out / "000001").iterdir()) == ["note.txt"]  # gen's frames gone
    assert (out / "000001" / "note.txt").read_text() == "mine"
    assert "000001/note.txt" in capsys.readouterr().err


def test_what_a_killed_run_left_is_not_content_and_not_deleted(tmp_path):
    out = tmp_path / "ds"
    (out / ".gen-data-killed1").mkdir(parents=True)  # another run's scratch folder (kill -9)
    (out / ".gen-data-killed1" / "000000.png").write_bytes(b"half written")
    (out / ".gen-lock").write_text(json.dumps({"pid": 2**22 + 1, "host": os.uname().nodename, "since": "then"}))
    assert main(_toy(out)) == 0  # the folder counts as empty; the stale lock is taken over
    _assert_toy_images(out, 2, seed=0)
    assert (out / ".gen-data-killed1" / "000000.png").read_bytes() == b"half written"
    assert not (out / ".gen-lock").exists()


# --- refusals change nothing -------------------------------------------------------------


def test_a_users_partial_folder_is_never_deleted(tmp_path, capsys):
    mydir = tmp_path / "mydir"
    (mydir / ".partial").mkdir(parents=True)
    (mydir / ".partial" / "work.txt").write_text("mine")
    assert main(_toy(mydir)) == 2  # not empty: .partial is the user's, not gen's
    assert "not empty" in capsys.readouterr().err
    out = tmp_path / "ds"
    assert main(_toy(out)) == 0
    (out / ".partial").mkdir()
    (out / ".partial" / "work.txt").write_text("mine")
    assert main(_toy(out, 2, "--overwrite")) == 0
    for folder in (mydir, out):
        assert (folder / ".partial" / "work.txt").read_text() == "mine" and _no_scratch(folder)
    assert ".partial/" in capsys.readouterr().err


def test_an_old_format_card_is_refused_and_nothing_is_deleted(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_toy(out)) == 0
    card = json.loads((out / CARD).read_text())
    del card["files"]  # what gen data wrote before it kept hashes
    (out / CARD).write_text(json.dumps(card))
    before = _snapshot(out)
    assert main(_toy(out, 2, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "cannot tell which files it wrote" in err and "new folder" in err and err.count("\n") == 1
    assert _snapshot(out) == before


def test_a_name_collision_with_a_users_file_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_toy(out, 2)) == 0
    (out / "000003.png").write_bytes(b"the user's own file")
    before = _snapshot(out)
    assert main(_toy(out, 5, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "'000003.png'" in err and err.count("\n") == 1
    assert _snapshot(out) == before and _no_scratch(out)


def test_an_edited_generated_file_the_new_dataset_would_replace_is_refused(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_toy(out, 2)) == 0
    (out / "000000.png").write_bytes(b"edited by the user")
    before = _snapshot(out)
    assert main(_toy(out, 2, "--seed", "1", "--overwrite")) == 2
    assert "'000000.png'" in capsys.readouterr().err
    assert _snapshot(out) == before


# --- all or nothing ----------------------------------------------------------------------


def test_ctrl_c_while_writing_leaves_the_old_dataset(tmp_path, monkeypatch):
    import gen.toyworld as toyworld

    out = tmp_path / "ds"
    assert main(_toy(out, 3)) == 0
    before = _snapshot(out)
    real = toyworld.toy_image

    def interrupted(i, *args, **kwargs):
        if i == 1:
            raise KeyboardInterrupt
        return real(i, *args, **kwargs)

    monkeypatch.setattr(toyworld, "toy_image", interrupted)
    assert main(_toy(out, 2, "--seed", "1", "--overwrite")) == 130
    assert _snapshot(out) == before and _no_scratch(out)


@pytest.mark.parametrize("at", [1, 5, 8])  # the first old file out, the first new file in, the card
def test_ctrl_c_during_the_swap_puts_the_old_dataset_back(tmp_path, monkeypatch, at):
    out = tmp_path / "ds"
    assert main(_toy(out, 2)) == 0
    before = _snapshot(out)
    real, calls = os.rename, []

    def rename(*args, **kwargs):
        calls.append(args)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)  # the swap's moves: 4 old files out, 4 new in
    assert main(_toy(out, 2, "--seed", "1", "--overwrite")) == 130
    monkeypatch.undo()
    assert _snapshot(out) == before and _no_scratch(out)


def test_a_failed_run_removes_only_the_folders_it_created(tmp_path, monkeypatch):
    import gen.toyworld as toyworld

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(toyworld, "toy_image", interrupted)
    assert main(_toy(tmp_path / "new" / "deeper" / "ds")) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message, why", [
    (["data", "toy", "--size", "0"], "--size must be a positive integer, got 0", ""),  # once silently 64
    (["data", "toy", "--size", "100000"], "--size must be between 1 and 4096 pixels, got 100000", "memory"),
    (["data", "toy-video", "--frames", "2000"], "--frames must be between 1 and 1024 frames per clip, got 2000",
     "memory"),
    (["data", "toy", "--n", "10000001"], "--n must be between 1 and 10000000 samples, got 10000001",
     "file system"),
])
def test_counts_have_bounds_named_in_one_line(tmp_path, capsys, argv, message, why):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and why in err and err.count("\n") == 1
    assert not out.exists()
