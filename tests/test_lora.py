"""Fine-tuning a pipeline with `gen train image --init`: every weight, or LoRA adapters
through peft (`--lora-rank`), saved in peft's layout and applied with `gen image --lora`."""

from __future__ import annotations

import copy

import pytest
import torch

import models
from gen.cli import main
from gen.errors import GenError
from gen.pipeline import Pipeline, SamplingDefaults
from gen.pipeline.lora import add_lora, load_lora, save_lora
from samplers import NoiseSchedule

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    torch.manual_seed(0)
    enc = models.TextEncoder(models.TextEncoderConfig(arch="tiny", hash_vocab=512, width=32, layers=1, heads=2,
                                                      embed_dim=32, context_length=16))
    net = models.create("dit-tiny", sample_size=8, text_dim=enc.dim, pooled_dim=enc.pooled_dim)
    with torch.no_grad():  # as if trained: zero-initialised gates and output layers would pass no gradient
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pipe = Pipeline(net, enc, NoiseSchedule.create("cosine", prediction="v"), SamplingDefaults(size=8, steps=2))
    return pipe.save_pretrained(tmp_path_factory.mktemp("lora") / "base")


def _inputs(net):
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, 3, 8, 8), generator=g)
    cond = {"text": torch.randn((2, 16, net.config.text_dim), generator=g),
            "pooled": torch.randn((2, net.config.pooled_dim), generator=g),
            "text_mask": torch.ones(2, 16, dtype=torch.bool), "null": torch.zeros(2, dtype=torch.bool)}
    return x, torch.tensor([10, 500]), cond


def _randomise_adapters(net):
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_" in name:
                p.copy_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("preset", ["dit-tiny", "unet-tiny"])
def test_fresh_adapters_change_nothing_and_only_they_train(preset):
    torch.manual_seed(0)
    net = models.create(preset, sample_size=8, text_dim=32, pooled_dim=32).eval()
    x, t, cond = _inputs(net)
    before = net(x, t, cond)
    add_lora(net, rank=4)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert any("to_qkv" in n for n in trainable) and not any(n.startswith("conditioner") for n in trainable)
    torch.testing.assert_close(net(x, t, cond), before)  # B starts at zero


def test_saved_adapter_loads_merged_unmerged_and_in_peft(tmp_path, pipe_dir):
    pipe = Pipeline.from_pretrained(str(pipe_dir))
    net = add_lora(copy.deepcopy(pipe.denoiser), rank=4)
    _randomise_adapters(net)
    x, t, cond = _inputs(net)
    expected = net(x, t, cond)
    folder = save_lora(net, tmp_path / "adapter", base=str(pipe_dir))
    full = sum(p.numel() for p in pipe.denoiser.parameters())
    assert (folder / "adapter_model.safetensors").stat().st_size < 4 * full * 0.5
    merged = load_lora(Pipeline.from_pretrained(str(pipe_dir)), folder).denoiser
    unmerged = load_lora(Pipeline.from_pretrained(str(pipe_dir)), folder, merge=False).denoiser
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    assert any(".lora_" in n for n, _ in unmerged.named_parameters())
    torch.testing.assert_close(merged(x, t, cond), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(unmerged(x, t, cond), expected, atol=1e-6, rtol=1e-5)
    # peft itself reads the folder
    by_peft = peft.PeftModel.from_pretrained(Pipeline.from_pretrained(str(pipe_dir)).denoiser, str(folder))
    torch.testing.assert_close(by_peft(x, t, cond), expected, atol=1e-6, rtol=1e-5)


def test_gen_train_lora_then_gen_image_lora(tmp_path, pipe_dir, capsys):
    run = tmp_path / "run"
    code = main(["train", "image", "--init", str(pipe_dir), "--lora-rank", "2", "--size", "8", "--steps", "3",
                 "--batch", "4", "--n", "8", "--sample-every", "0", "--lr", "0.05", "--warmup", "1", "--ema-decay", "0",
                 "--out", str(run)])
    assert code == 0
    base = Pipeline.from_pretrained(str(pipe_dir))
    tuned = load_lora(Pipeline.from_pretrained(str(pipe_dir)), run / "lora")
    base_state = base.denoiser.state_dict()
    changed = [k for k, v in tuned.denoiser.state_dict().items() if not torch.equal(v, base_state[k])]
    assert changed and all(any(p in k for p in ("to_qkv", "to_q", "to_kv", "to_out", "mlp")) for k in changed)
    capsys.readouterr()
    out = tmp_path / "a.png"
    assert main(["image", "a cat", "--model", str(pipe_dir), "--lora", str(run / "lora"), "--out", str(out)]) == 0
    assert out.is_file()


def test_gen_train_init_fine_tunes_every_weight(tmp_path, pipe_dir):
    run = tmp_path / "run"
    assert main(["train", "image", "--init", str(pipe_dir), "--size", "8", "--steps", "3", "--batch", "4", "--n", "8",
                 "--sample-every", "0", "--lr", "0.05", "--warmup", "1", "--ema-decay", "0", "--out", str(run)]) == 0
    base, tuned = Pipeline.from_pretrained(str(pipe_dir)), Pipeline.from_pretrained(str(run / "pipeline"))
    assert tuned.denoiser.config == base.denoiser.config and tuned.defaults == base.defaults
    assert tuned.schedule.alphas_cumprod.equal(base.schedule.alphas_cumprod)
    for part in ("denoiser", "text_encoder"):  # both trained, keys unchanged
        before, after = getattr(base, part).state_dict(), getattr(tuned, part).state_dict()
        assert before.keys() == after.keys()
        assert any(not torch.equal(after[k], before[k]) for k in before), part
    assert not (run / "lora").exists()


def test_init_at_another_size_is_refused(tmp_path, capsys, pipe_dir):
    assert main(["train", "image", "--init", str(pipe_dir), "--size", "16", "--out", str(tmp_path / "r")]) == 2
    assert "fine-tune it at --size 8" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "image", "--init", "X", "--lora-rank", "0", "--out", "r"], "--lora-rank must be a positive integer"),
    (["train", "image", "--lora-rank", "4", "--out", "r"], "gen train image --init PIPELINE"),
    (["image", "a cat", "--lora", "."], "is not a LoRA adapter folder"),
])
def test_lora_bad_input(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_adapter_that_does_not_fit_is_refused(tmp_path, pipe_dir):
    torch.manual_seed(3)
    other = add_lora(models.create("dit-tiny", sample_size=8, text_dim=64, pooled_dim=64, hidden_size=96), rank=2)
    folder = save_lora(other, tmp_path / "other", base="x")
    with pytest.raises(GenError, match="does not fit"):
        load_lora(Pipeline.from_pretrained(str(pipe_dir)), folder)
