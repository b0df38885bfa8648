"""`gen score clip`: CLIPScore with an open_clip model whose weights are found locally (a tiny random
model written in open_clip's hub layout and safetensors format), against torchmetrics' CLIPScore and a
direct open_clip computation on the same files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gen.cli import main
from metrics.weights import REGISTRY

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"embed_dim": 16, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIP in open_clip's hub layout: open_clip_config.json + open_clip_model.safetensors."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(4)
    model = CLIP(**TINY)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY, "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip-images") / "toy"
    assert main(["data", "toy", "--n", "6", "--size", "48", "--seed", "2", "--out", str(root)]) == 0
    return root


def _run(capsys, *argv):
    capsys.readouterr()
    code = main(["score", "clip", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def reference(model_name, **kwargs):
    """open_clip's own model, eval transform and tokenizer for `model_name`."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, **kwargs)
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


def direct_cosines(ref, files, prompts) -> torch.Tensor:
    model, preprocess, tokenizer = ref
    with torch.no_grad():
        e_i = model.encode_image(torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files]))
        e_t = model.encode_text(tokenizer(prompts))
    return torch.nn.functional.cosine_similarity(e_i.double(), e_t.double())


def captions(folder):
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    return [folder / r["file_name"] for r in rows], [r["text"] for r in rows]


def test_clip_score_equals_torchmetrics_and_open_clip(tiny_clip, images, capsys):
    from torchmetrics.multimodal.clip_score import CLIPScore
    from torchvision.transforms.functional import to_pil_image

    code, out, _ = _run(capsys, "--fake", str(images), "--model", str(tiny_clip), "--json", "--batch", "4")
    assert code == 0 and len(out.splitlines()) == 1
    report = json.loads(out)
    files, texts = captions(images)
    ref = reference(f"local-dir:{tiny_clip}")
    cos = direct_cosines(ref, files, texts)
    assert [r["file_name"] for r in report["per_sample"]] == [f.name for f in files]
    assert [r["prompt"] for r in report["per_sample"]] == texts
    np.testing.assert_allclose([r["cosine"] for r in report["per_sample"]], cos.numpy(), rtol=1e-5, atol=1e-6)
    assert report["reduction"] == "torchmetrics" and report["n"] == 6 and report["clip_score"] > 1

    model, preprocess, tokenizer = ref  # torchmetrics' CLIPScore with the same model behind its HF-style API

    class OpenCLIPForTorchmetrics(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.config = model, SimpleNamespace()

        def get_image_features(self, pixel_values):
            return self.model.encode_image(pixel_values)

        def get_text_features(self, input_ids, attention_mask):
            return self.model.encode_text(input_ids)

    def processor(images=None, text=None, **kwargs):
        if images is not None:
            return {"pixel_values": torch.stack([preprocess(to_pil_image(i)) for i in images])}
        ids = tokenizer(text)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    metric = CLIPScore(model_name_or_path=lambda: (OpenCLIPForTorchmetrics(), processor))
    metric.update([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files], texts)
    assert report["clip_score"] == pytest.approx(metric.compute().item(), rel=1e-6)

    code, out, _ = _run(capsys, "--fake", str(images), "--model", str(tiny_clip), "--reduction", "hessel")
    assert code == 0 and "reduction: hessel2021" in out and "per_sample" not in out
    hessel = float(out.split("clip_score: ")[1].split()[0])
    assert hessel == pytest.approx((2.5 * cos.clamp_min(0)).mean().item(), rel=1e-5)  # printed to 6 digits


def test_prompts_file_follows_the_sorted_file_names(tiny_clip, images, tmp_path, capsys):
    loose = tmp_path / "loose"  # no metadata: no captions of its own
    loose.mkdir()
    for f in sorted(images.glob("*.png"), reverse=True):
        shutil.copy(f, loose / f"img-{f.stem[::-1]}.png")
    code, _, err = _run(capsys, "--fake", str(loose), "--model", str(tiny_clip))
    assert code == 2 and "has no caption" in err and "--prompts" in err

    names = sorted(p.name for p in loose.glob("*.png"))
    listed = [{"file_name": n, "text": "unused"} for n in reversed(names)]  # metadata order is not name order
    (loose / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in listed))
    prompts = ["a red ball", "two cats", "a dog in a hat", "a tree", "a blue car left of a house", "a cup"]
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(prompts) + "\n")
    code, out, _ = _run(capsys, "--fake", str(loose), "--model", str(tiny_clip), "--prompts", str(file), "--json")
    report = json.loads(out)
    assert code == 0 and [(r["file_name"], r["prompt"]) for r in report["per_sample"]] == list(zip(names, prompts))
    cos = direct_cosines(reference(f"local-dir:{tiny_clip}"), [loose / n for n in names], prompts)
    np.testing.assert_allclose([r["cosine"] for r in report["per_sample"]], cos.numpy(), rtol=1e-5, atol=1e-6)

    file.write_text("\n".join(prompts[:5]))
    code, _, err = _run(capsys, "--fake", str(loose), "--model", str(tiny_clip), "--prompts", str(file))
    assert code == 2 and "has 5 prompts but" in err and "holds 6 images" in err
    file.write_text("\n".join(prompts[:2] + [""] + prompts[3:]))
    code, _, err = _run(capsys, "--fake", str(loose), "--model", str(tiny_clip), "--prompts", str(file))
    assert code == 2 and "line 3 is empty" in err
    file.write_text("\n".join(["a ball " * 30] + prompts[1:]))  # longer than the 24-token context: cut, said once
    code, _, err = _run(capsys, "--fake", str(loose), "--model", str(tiny_clip), "--prompts", str(file))
    assert code == 0 and err.count("24-token context") == 1


@pytest.fixture
def caches(tmp_path, monkeypatch):
    for var in ("GEN_WEIGHTS", "TORCH_HOME", "HF_HUB_CACHE"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    return tmp_path


def test_model_names_resolve_through_the_registry(tiny_clip, images, caches, capsys, monkeypatch):
    import open_clip.factory

    code, _, err = _run(capsys, "--fake", str(images))  # ViT-B-32: OpenAI's weights, not on this machine
    s = REGISTRY["clip-vit-b-32"]
    for part in (s.filename, s.hf_repo, "Looked in", str(caches / "HF_HUB_CACHE"), "huggingface-cli download"):
        assert part in err, part
    assert code == 2

    # a model name registered like ViT-B-32, its file in the Hugging Face cache layout
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "gen-test-tiny-clip", TINY)
    monkeypatch.setitem(REGISTRY, "clip-test-tiny", dataclasses.replace(
        s, name="clip-test-tiny", hf_repo="gen-test/tiny-clip", open_clip=("gen-test-tiny-clip", "test")))
    repo = caches / "HF_HUB_CACHE" / "models--gen-test--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_clip / s.hf_filename, repo / "snapshots" / commit / s.hf_filename)
    code, out, _ = _run(capsys, "--fake", str(images), "--model", "gen-test-tiny-clip", "--json")
    report = json.loads(out)
    assert code == 0 and report["weights"] == str(repo / "snapshots" / commit / s.hf_filename)
    files, texts = captions(images)  # a built-in name: open_clip's default (OpenAI) preprocessing
    cos = direct_cosines(reference("gen-test-tiny-clip", pretrained=str(tiny_clip / s.hf_filename)), files, texts)
    np.testing.assert_allclose([r["cosine"] for r in report["per_sample"]], cos.numpy(), rtol=1e-5, atol=1e-6)

    code, _, err = _run(capsys, "--fake", str(images), "--model", "no-such-clip")
    assert code == 2 and "unknown CLIP model 'no-such-clip'" in err
    code, _, err = _run(capsys, "--fake", str(images), "--model", "ViT-L-14")  # a real arch with no registry entry
    assert code == 2 and "no registered weights" in err
