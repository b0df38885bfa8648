"""Datasets laid out the way Hugging Face `datasets` reads them: every layout is checked
against what `datasets` itself loads from the same files (captions, labels, pixels)."""

import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gen.data import open_dataset
from gen.errors import GenError

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()


def expected(pil) -> torch.Tensor:
    a = np.asarray(pil.convert("RGB"), dtype=np.float64)
    return torch.from_numpy((a * 2.0 / 255.0 - 1.0).transpose(2, 0, 1)).float()


def image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(path)


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def same_as_datasets(ours, theirs, caption_column="text"):
    """Our items are theirs: same order, captions, labels and pixels."""
    assert len(ours) == len(theirs)
    for i, row in enumerate(theirs):
        item = ours[i]
        if caption_column in row:
            assert item["text"] == row[caption_column]
        if "label" in row:
            assert item["label"] == row["label"]
        torch.testing.assert_close(item["image"], expected(row["image"]), atol=1e-6, rtol=0)


@pytest.fixture
def split_metadata(tmp_path):
    """train/ and test/, each with its own metadata.jsonl (the layout that used to caption "train")."""
    for split, names in (("train", ["a", "b", "c"]), ("test", ["d"])):
        for k, n in enumerate(names):
            image(tmp_path / split / f"{n}.png", seed=ord(n))
        jsonl(tmp_path / split / "metadata.jsonl", [{"file_name": f"{n}.png", "text": f"a {n} circle"} for n in names])
    return tmp_path


def test_split_folders_with_their_own_metadata(split_metadata):
    theirs = datasets.load_dataset("imagefolder", data_dir=str(split_metadata))
    same_as_datasets(open_dataset(str(split_metadata)), theirs["train"])
    same_as_datasets(open_dataset(str(split_metadata), split="test"), theirs["test"])
    assert open_dataset(str(split_metadata))[0]["text"] == "a a circle"
    with pytest.raises(GenError, match="--split validation: .* has the split folders train, test; pass one of them"):
        open_dataset(str(split_metadata), split="validation")


def test_metadata_csv_with_a_caption_column(tmp_path):
    rows = [("a.png", "red, and round", "3"), ("sub/b.png", 'a "blue" square', "4")]
    for k, (name, _, _) in enumerate(rows):
        image(tmp_path / name, seed=k)
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption", "score"])
        writer.writerows(rows)
    theirs = datasets.load_dataset("imagefolder", data_dir=str(tmp_path))["train"]
    ours = open_dataset(str(tmp_path), caption_column="caption")
    same_as_datasets(ours, theirs, caption_column="caption")
    assert [r["score"] for r in ours.records] == theirs["score"] == [3, 4]
    with pytest.raises(GenError, match=r"no 'text' column .*columns: file_name, caption, score\); "
                                       r"pass --caption-column with one of caption"):
        open_dataset(str(tmp_path))
    with pytest.raises(GenError, match="no 'prompt' column"):
        open_dataset(str(tmp_path), caption_column="prompt")


def test_split_folders_of_class_folders_and_split_aliases(tmp_path):
    for path, seed in (("training/cat/a.png", 1), ("training/dog/b.png", 2), ("training/dog/c.png", 3),
                       ("val/cat/d.png", 4)):
        image(tmp_path / path, seed)
    theirs = datasets.load_dataset("imagefolder", data_dir=str(tmp_path))
    assert set(theirs) == {"train", "validation"}
    ours = open_dataset(str(tmp_path))
    same_as_datasets(ours, theirs["train"])
    assert ours.classes == theirs["train"].features["label"].names == ["cat", "dog"]
    assert [ours[i]["text"] for i in range(3)] == ["cat", "dog", "dog"]
    same_as_datasets(open_dataset(str(tmp_path), split="validation"), theirs["validation"])
    with pytest.raises(GenError, match="--caption-column text2: .* no metadata"):
        open_dataset(str(tmp_path), caption_column="text2")


def test_a_folder_without_splits_is_the_train_split_only(tmp_path):
    image(tmp_path / "a.png", 0)
    assert len(open_dataset(str(tmp_path), split="train")) == 1
    with pytest.raises(GenError, match="--split test: .* has no split folders"):
        open_dataset(str(tmp_path), split="test")


def test_dataset_objects_and_save_to_disk_folders(split_metadata, tmp_path_factory):
    theirs = datasets.load_dataset("imagefolder", data_dir=str(split_metadata))
    same_as_datasets(open_dataset(theirs), theirs["train"])  # a DatasetDict: the train split
    same_as_datasets(open_dataset(theirs["test"]), theirs["test"])  # a Dataset
    with pytest.raises(GenError, match="--split validation: the dataset has the splits train, test"):
        open_dataset(theirs, split="validation")
    saved = tmp_path_factory.mktemp("saved")
    theirs.save_to_disk(str(saved / "dict"))
    theirs["test"].save_to_disk(str(saved / "one"))
    same_as_datasets(open_dataset(str(saved / "dict"), split="test"), theirs["test"])
    same_as_datasets(open_dataset(str(saved / "one")), theirs["test"])
    renamed = theirs["train"].rename_column("text", "prompt")
    assert open_dataset(renamed, caption_column="prompt")[1]["text"] == "a b circle"
    with pytest.raises(GenError, match=r"no 'text' column .*\(its columns: image, prompt\); "
                                       r"pass --caption-column with one of prompt"):
        open_dataset(renamed)


def test_a_hub_id_is_read_from_the_local_cache_and_never_fetched(split_metadata, tmp_path_factory, monkeypatch):
    """A dataset cached by an earlier load_dataset("owner/name") is read offline; a hub id
    not in the cache is an error saying how to cache it, with datasets held offline."""
    cache = tmp_path_factory.mktemp("cache")
    datasets.load_dataset("imagefolder", data_dir=str(split_metadata), cache_dir=str(cache / "build"))
    built = next(p for p in glob.glob(str(cache / "build" / "imagefolder" / "*" / "*" / "*")) if os.path.isdir(p))
    target = cache / "hub" / "someone___toy-shapes" / "default" / "0.0.0" / os.path.basename(built)
    shutil.copytree(built, target)  # the layout datasets keeps a hub dataset's prepared copy in
    for arrow in target.glob("imagefolder-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("imagefolder", "toy-shapes")))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache / "hub"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    theirs = datasets.load_dataset("imagefolder", data_dir=str(split_metadata))
    same_as_datasets(open_dataset("someone/toy-shapes"), theirs["train"])
    same_as_datasets(open_dataset("someone/toy-shapes", split="test"), theirs["test"])
    with pytest.raises(GenError, match="'someone/elsewhere' is not a folder here and not in the local datasets cache"
                                       ".*datasets.load_dataset\\('someone/elsewhere'\\)"):
        open_dataset("someone/elsewhere")
    assert datasets.config.HF_HUB_OFFLINE is False  # restored


def test_gen_train_takes_split_and_caption_column(split_metadata, tmp_path, capsys):
    from gen.cli import main

    out = tmp_path / "run"
    code = main(["train", "sr", "--data", str(split_metadata), "--split", "valid", "--size", "8", "--scale", "2",
                 "--steps", "1", "--out", str(out)])
    assert code == 2 and "--split valid" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flags, expected", [([], False), (["--download"], True)])
def test_gen_train_asks_the_hub_only_with_download(tmp_path, monkeypatch, capsys, flags, expected):
    import gen.data.hf as hf
    from gen.cli import main
    from gen.errors import GenError

    asked = []

    def load_hub(name, split, download):
        asked.append((name, download))
        raise GenError(f"dataset {name!r} stops here")

    monkeypatch.setattr(hf, "load_hub", load_hub)
    code = main(["train", "image", "--data", "someone/captions", "--steps", "1", "--out", str(tmp_path / "run"),
                 *flags])
    assert code == 2 and asked == [("someone/captions", expected)]
    assert "stops here" in capsys.readouterr().err
