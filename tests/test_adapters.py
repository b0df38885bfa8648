"""The diffusers adapters against the diffusers models called directly, on tiny configs."""

import copy
import json
import time

import diffusers
import pytest
import torch

from models.adapters import (DiffusersDiT, DiffusersPlainUNet2D, DiffusersUNet2D, DiffusersUNet3D, adapt,
                             load_diffusers)

B, C, TEXT_DIM = 2, 4, 16


def build(kind: str):
    torch.manual_seed(0)
    unet = dict(sample_size=8, in_channels=C, out_channels=C, layers_per_block=1, block_out_channels=(8, 16),
                norm_num_groups=4)
    if kind == "unet2d":
        return diffusers.UNet2DConditionModel(
            **unet, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=TEXT_DIM,
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2)
    if kind == "unet2d_plain":
        return diffusers.UNet2DModel(**unet, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                     up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=5)
    if kind == "dit":
        return diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=C,
                                               out_channels=2 * C, num_layers=2, sample_size=8, patch_size=2,
                                               num_embeds_ada_norm=10)
    return diffusers.UNet3DConditionModel(
        **unet, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), cross_attention_dim=TEXT_DIM,
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), attention_head_dim=4)


KINDS = ["unet2d", "unet2d_plain", "dit", "unet3d"]


@pytest.fixture(scope="module")
def models():
    return {k: build(k).eval() for k in KINDS}  # eval: DiT drops 10% of labels in train mode


def inputs(kind: str):
    g = torch.Generator().manual_seed(1)
    shape = (B, C, 3, 8, 8) if kind == "unet3d" else (B, C, 8, 8)
    x, t = torch.randn(shape, generator=g), torch.tensor([10, 700])
    text = torch.randn(B, 5, TEXT_DIM, generator=g)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    cond = {"unet2d": {"text": text, "text_mask": mask}, "unet3d": {"text": text},
            "dit": {"label": torch.tensor([1, 7])}, "unet2d_plain": {"label": torch.tensor([0, 4])}}[kind]
    return x, t, cond


def direct(kind, model, x, t, cond):
    """The diffusers call our adapter stands for, written out by hand."""
    if kind == "unet2d":
        return model(x, t, encoder_hidden_states=cond["text"], encoder_attention_mask=cond.get("text_mask")).sample
    if kind == "unet2d_plain":
        return model(x, t, class_labels=cond["label"]).sample
    if kind == "dit":
        return model(x, timestep=t, class_labels=cond["label"]).sample
    return model(x, t, encoder_hidden_states=cond["text"]).sample


ADAPTER = {"unet2d": DiffusersUNet2D, "unet2d_plain": DiffusersPlainUNet2D, "dit": DiffusersDiT,
           "unet3d": DiffusersUNet3D}


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_output_is_the_diffusers_output(models, kind):
    model = models[kind]
    net = adapt(model)
    assert type(net) is ADAPTER[kind]
    x, t, cond = inputs(kind)
    with torch.no_grad():
        assert torch.equal(net(x, t, cond), direct(kind, model, x, t, cond))


def test_attributes_describe_the_model(models):
    u2, plain, dit, u3 = (adapt(models[k]) for k in KINDS)
    assert (u2.in_channels, u2.out_channels, u2.cond_keys, u2.is_video) == (C, C, ("text",), False)
    assert (plain.cond_keys, plain.is_video) == (("label",), False)
    assert (dit.in_channels, dit.out_channels, dit.cond_keys, dit.is_video) == (C, 2 * C, ("label",), False)
    assert (dit.learned_sigma, dit.null_label) == (True, 10)
    assert (u3.in_channels, u3.out_channels, u3.cond_keys, u3.is_video) == (C, C, ("text",), True)


def test_text_mask_reaches_cross_attention(models):
    x, t, cond = inputs("unet2d")
    model = models["unet2d"]
    with torch.no_grad():
        masked = adapt(model)(x, t, cond)
        unmasked = adapt(model, use_text_mask=False)(x, t, cond)
        assert torch.equal(unmasked, model(x, t, encoder_hidden_states=cond["text"]).sample)
    assert not torch.allclose(masked[0], unmasked[0])  # row 0 has padding
    torch.testing.assert_close(masked[1], unmasked[1])  # row 1 has none


def test_runs_in_the_model_dtype_and_answers_in_x_dtype(models):
    net = adapt(copy.deepcopy(models["dit"]).to(torch.bfloat16))
    x, t, cond = inputs("dit")
    with torch.no_grad():
        out = net(x, t, cond)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net.model(x.bfloat16(), timestep=t, class_labels=cond["label"]).sample.float())


@pytest.mark.parametrize("kind", ["unet2d", "dit", "unet3d"])
def test_save_pretrained_then_load_diffusers(models, kind, tmp_path):
    models[kind].save_pretrained(tmp_path)
    net = load_diffusers(tmp_path).eval()
    assert type(net) is ADAPTER[kind]
    x, t, cond = inputs(kind)
    with torch.no_grad():
        assert torch.equal(net(x, t, cond), direct(kind, models[kind], x, t, cond))


def test_pipeline_folder_and_legacy_dit_class_name(models, tmp_path):
    models["unet2d"].save_pretrained(tmp_path / "pipe" / "unet")
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    assert isinstance(load_diffusers(tmp_path / "pipe"), DiffusersUNet2D)
    models["dit"].save_pretrained(tmp_path / "dit")  # facebook/DiT-XL-2-256 names the legacy class
    config = json.loads((tmp_path / "dit" / "config.json").read_text())
    (tmp_path / "dit" / "config.json").write_text(json.dumps({**config, "_class_name": "Transformer2DModel"}))
    assert isinstance(load_diffusers(tmp_path / "dit"), DiffusersDiT)


def test_hub_id_without_network_is_one_clear_error():
    diffusers.UNet2DConditionModel  # noqa: B018  (diffusers imports lazily: keep that out of the clock)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="neither a local folder nor in the Hugging Face cache"):
        load_diffusers("gen-tests/no-such-model", subfolder="unet")
    assert time.monotonic() - start < 5  # no network retries


def test_unsupported_classes_are_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="holds a AutoencoderKL; supported: UNet2DConditionModel"):
        load_diffusers(tmp_path)
    with pytest.raises(TypeError, match="no adapter for Linear"):
        adapt(torch.nn.Linear(2, 2))


def test_missing_cond_keys_and_wrong_shapes_are_named(models):
    u2, dit, u3 = adapt(models["unet2d"]), adapt(models["dit"]), adapt(models["unet3d"])
    x, t, cond = inputs("unet2d")
    with pytest.raises(ValueError, match="DiffusersUNet2D needs cond key\\(s\\) text; got text_mask"):
        u2(x, t, {"text_mask": cond["text_mask"]})
    with pytest.raises(ValueError, match="DiffusersDiT needs cond key\\(s\\) label; got none"):
        dit(x, t, {})
    with pytest.raises(ValueError, match=r"DiffusersUNet2D takes x of shape \(B, C, H, W\), got \(2, 4, 3, 8, 8\)"):
        u2(x[:, :, None].expand(-1, -1, 3, -1, -1), t, cond)
    with pytest.raises(ValueError, match=r"DiffusersUNet3D takes x of shape \(B, C, T, H, W\), got \(2, 4, 8, 8\)"):
        u3(x, t, cond)
    with pytest.raises(ValueError, match=r"cond\['text'\] of shape \(2, L, 16\).*\(2, 5, 8\)"):
        u2(x, t, {"text": cond["text"][..., :8]})
    with pytest.raises(ValueError, match=r"cond\['label'\] of shape \(2,\), got \(1,\)"):
        dit(x, t, {"label": torch.tensor([1])})
    with pytest.raises(ValueError, match="built for 4 input channels"):
        dit(x[:, :3], t, {"label": torch.tensor([1, 2])})
