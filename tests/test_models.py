"""Denoisers: shapes, identity at init, video twins, frame mixing, checkpoints, errors."""

from __future__ import annotations

import json

import pytest
import torch

import models
from models.blocks import ResBlock, SpatialTransformer, TemporalAttention, TemporalConv
from models.dit import DiTBlock, MotionConv

TINY = ("unet-tiny", "dit-tiny", "video-unet-tiny", "video-dit-tiny", "sr-unet-tiny")


def _inputs(net, batch=2, frames=4, size=None, text_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = net.config
    size = size or cfg.sample_size
    shape = (batch, cfg.in_channels, frames, size, size) if cfg.video else (batch, cfg.in_channels, size, size)
    x = torch.randn(shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = {}
    if cfg.text_dim:
        cond["text"] = torch.randn(batch, text_len, cfg.text_dim, generator=g)
        cond["text_mask"] = torch.ones(batch, text_len, dtype=torch.bool)
        cond["text_mask"][0, 3:] = False
    if cfg.pooled_dim:
        cond["pooled"] = torch.randn(batch, cfg.pooled_dim, generator=g)
    if cfg.num_classes:
        cond["label"] = torch.randint(0, cfg.num_classes, (batch,), generator=g)
    if cfg.noise_level:
        cond["noise_level"] = torch.randint(0, 1000, (batch,), generator=g)
    if "low_res" in cfg.concat_keys:  # a 4x stage's input
        cond["low_res"] = torch.randn(*shape[:-2], max(1, size // 4), max(1, size // 4), generator=g)
    return x, t, cond


def _randomize(net, seed=0):
    """Give every parameter (zero-initialised ones too) small random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


@pytest.mark.parametrize("name", list(models.PRESETS))
def test_every_preset_keeps_the_input_shape(name):
    # Tiny presets run for real; the big ones propagate shapes on the meta device.
    device = "cpu" if name in TINY else "meta"
    with torch.device(device):
        net = models.create(name).eval()
        x, t, cond = _inputs(net, batch=1, frames=2 * getattr(net.config, "tubelet", 1))
    x, t = x.to(device), t.to(device)
    cond = {k: v.to(device) for k, v in cond.items()}
    with torch.no_grad():
        assert net(x, t, cond).shape == x.shape


@pytest.mark.parametrize("name", TINY)
def test_learned_sigma_doubles_the_output_channels(name):
    net = models.create(name, learn_sigma=True)
    x, t, cond = _inputs(net)
    out = net(x, t, cond)
    assert out.shape[1] == 2 * x.shape[1] and out.shape[2:] == x.shape[2:]


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_every_parameter(name):
    net = _randomize(models.create(name))
    x, t, cond = _inputs(net)
    cond["null"] = torch.tensor([True, False])  # reaches the null embeddings too
    net(x, t, cond).square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


@pytest.mark.parametrize("name", TINY)
def test_fresh_models_predict_zero(name):
    # Zero-initialised output layers (DiT final layer, U-Net conv_out).
    net = models.create(name)
    x, t, cond = _inputs(net)
    assert torch.count_nonzero(net(x, t, cond)) == 0


def test_blocks_are_the_identity_at_init():
    torch.manual_seed(0)
    tokens, c = torch.randn(3, 10, 32), torch.randn(3, 32)
    ctx, mask = torch.randn(3, 4, 32), torch.ones(3, 4, dtype=torch.bool)
    assert torch.equal(DiTBlock(32, 4, 4.0, context_dim=32)(tokens, c, ctx, mask), tokens)
    fmap = torch.randn(6, 16, 8, 8)
    assert torch.equal(SpatialTransformer(16, 2, 32)(fmap, ctx.repeat(2, 1, 1), mask.repeat(2, 1)), fmap)
    assert torch.equal(ResBlock(16, 16, 32)(fmap, torch.randn(6, 32)), fmap)
    assert torch.equal(TemporalConv(16)(fmap, frames=3), fmap)
    seq = torch.randn(5, 7, 16)
    assert torch.equal(TemporalAttention(16, 2)(seq), seq)


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_a_video_model_at_init_is_its_image_twin_frame_by_frame(kind):
    if kind == "unet":
        image = models.create("unet-tiny")
        video = models.create("video-unet-tiny")
    else:
        image = models.create("dit-tiny")
        video = models.create("video-dit-tiny", tubelet=1)
    _randomize(image)
    missing, unexpected = video.load_state_dict(image.state_dict(), strict=False)
    assert not unexpected and missing and all("temporal" in k for k in missing), missing
    x, t, cond = _inputs(video, frames=5)
    with torch.no_grad():
        out = video(x, t, cond)
        for f in range(5):
            # Equal up to float32 summation order (batch shapes differ).
            scale = out.abs().max().item()
            torch.testing.assert_close(out[:, :, f], image(x[:, :, f], t, cond), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name, tubelet", [("video-unet-tiny", 1), ("video-dit-tiny", 2), ("video-dit-tiny", 1)])
def test_temporal_layers_mix_frames_and_spatial_layers_never_do(name, tubelet):
    overrides = {"tubelet": tubelet} if "dit" in name else {}
    net = _randomize(models.create(name, **overrides)).eval()
    x, t, cond = _inputs(net, frames=4)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    with torch.no_grad():
        base = net(x, t, cond)
        changed = (net(x2, t, cond) - base)[:, :, -1].abs().max()
        assert changed > 1e-5 * base.abs().max()
        # Silence every temporal layer: frames no longer talk to each other.
        for n, p in net.named_parameters():
            if "temporal" in n and (n.endswith("ada.weight") or n.endswith("ada.bias") or "conv." in n
                                    or "attn.to_out" in n):
                p.zero_()
        out1, out2 = net(x, t, cond), net(x2, t, cond)
    last = -1 if tubelet == 1 else slice(-tubelet, None)  # a tubelet mixes the frames inside it
    assert torch.equal(out1[:, :, last], out2[:, :, last])


def test_full_3d_attention_option():
    net = _randomize(models.create("video-dit-tiny", attention="full")).eval()
    assert len(net.temporal_blocks) == 0
    x, t, cond = _inputs(net, frames=4)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    with torch.no_grad():
        assert (net(x2, t, cond) - net(x, t, cond))[:, :, -1].abs().max() > 1e-3


def test_null_condition_ignores_the_text():
    net = _randomize(models.create("dit-tiny")).eval()
    x, t, cond = _inputs(net)
    other = {**cond, "text": torch.randn_like(cond["text"]), "pooled": torch.randn_like(cond["pooled"])}
    null = torch.tensor([True, True])
    with torch.no_grad():
        assert torch.equal(net(x, t, {**cond, "null": null}), net(x, t, {**other, "null": null}))
        assert not torch.equal(net(x, t, cond), net(x, t, other))


def test_padding_tokens_are_masked_out():
    net = _randomize(models.create("unet-tiny")).eval()
    x, t, cond = _inputs(net)
    cond["text_mask"][:] = True
    cond["text_mask"][:, 3:] = False
    junk = cond["text"].clone()
    junk[:, 3:] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, cond), net(x, t, {**cond, "text": junk}))


@pytest.mark.parametrize("name", ["dit-tiny", "unet-tiny", "video-dit-tiny"])
def test_class_conditioning_and_concat_inputs(name):
    video = "video" in name
    keys = ("frames", "frame_mask") if video else ("low_res",)
    net = _randomize(models.create(name, num_classes=10, text_dim=None, pooled_dim=None,
                                   concat_keys=keys, noise_level=True)).eval()
    x, t, cond = _inputs(net, frames=4)
    cond["noise_level"] = torch.tensor([0, 250])
    if video:
        cond["frames"] = torch.randn_like(x)
        cond["frame_mask"] = torch.tensor([[1.0, 0, 1, 0], [1, 1, 0, 0]])
    else:
        cond["low_res"] = torch.randn(2, 3, 8, 8)  # upsampled to x's size inside
    with torch.no_grad():
        base = net(x, t, cond)
        assert base.shape == x.shape
        key = "frames" if video else "low_res"
        assert not torch.equal(base, net(x, t, {**cond, key: cond[key] + 1}))
        assert not torch.equal(base, net(x, t, {**cond, "noise_level": cond["noise_level"] + 100}))
        assert not torch.equal(base, net(x, t, {**cond, "label": (cond["label"] + 1) % 10}))


def test_checkpoints_round_trip_bit_for_bit(tmp_path):
    net = _randomize(models.create("video-dit-tiny")).eval()
    net.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["_class"] == "DiT" and config["tubelet"] == 2
    back = models.load_pretrained(tmp_path / "ckpt").eval()
    assert back.config == net.config
    for (n, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n
    x, t, cond = _inputs(net)
    with torch.no_grad():
        assert torch.equal(net(x, t, cond), back(x, t, cond))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        net.save_pretrained(tmp_path / "ckpt")
    net.save_pretrained(tmp_path / "ckpt", overwrite=True)


def test_configs_round_trip_through_json():
    for name, (cls, kwargs) in models.PRESETS.items():
        config = cls.config_class(**kwargs)
        data = json.loads(json.dumps(models.base.config_to_dict(config)))
        assert models.base.config_from_dict(cls.config_class, data) == config


def test_overrides_and_unknown_names():
    net = models.create("dit-tiny", in_channels=4, text_dim=128)
    assert net.config.in_channels == 4 and net.config.text_dim == 128
    with pytest.raises(ValueError, match="unknown model preset 'dit-huge'; known: unet-tiny"):
        models.create("dit-huge")
    with pytest.raises(ValueError, match="no field"):
        models.create("dit-tiny", widht=3)
    assert dict(models.list_models())["dit-tiny"] == models.create("dit-tiny").num_parameters()


@pytest.mark.parametrize("name, bad, message", [
    ("dit-tiny", dict(channels=4), "built for 3 input channels"),
    ("unet-tiny", dict(channels=1), "built for 3 input channels"),
    ("dit-tiny", dict(size=15), "divisible by 2"),
    ("unet-tiny", dict(size=9), "divisible by 2"),
    ("video-dit-tiny", dict(frames=3), "frame count divisible by 2"),
    ("dit-tiny", dict(drop="pooled"), "needs cond key"),
    ("video-unet-tiny", dict(rank=4), r"\(B, C, T, H, W\)"),
])
def test_bad_input_names_the_shapes(name, bad, message):
    net = models.create(name)
    cfg = net.config
    size = bad.get("size", cfg.sample_size)
    frames = bad.get("frames", 4)
    channels = bad.get("channels", cfg.in_channels)
    x, t, cond = _inputs(net, frames=frames, size=size)
    x = x[:, :1].repeat_interleave(channels, 1) if channels != cfg.in_channels else x
    if bad.get("rank") == 4:
        x = x[:, :, 0]
    cond.pop(bad.get("drop", "-"), None)
    with pytest.raises(ValueError, match=message):
        net(x, t, cond)


def test_torch_compile_traces_without_graph_breaks():
    dynamo = pytest.importorskip("torch._dynamo")
    net = models.create("dit-tiny").eval()
    x, t, cond = _inputs(net)
    try:
        compiled = torch.compile(net, backend="eager", fullgraph=True)
        with torch.no_grad():
            out = compiled(x, t, cond)
    except Exception as err:  # pragma: no cover - only where dynamo cannot run at all
        if "not supported" in str(err).lower() and "python" in str(err).lower():
            pytest.skip(f"torch.compile unavailable: {err}")
        raise
    finally:
        dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(out, net(x, t, cond))


@pytest.mark.parametrize("name, overrides", [("unet-tiny", {}), ("dit-tiny", {}),
                                             ("dit-tiny", {"temporal_mode": "clip", "temporal_cross_attention": True})])
def test_video_from_image_copies_the_image_weights_and_starts_as_the_image_model(name, overrides):
    image = _randomize(models.create(name)).eval()
    video = models.video_from_image(image, frames=4, **overrides).eval()
    image_state = image.state_dict()
    for key, value in video.state_dict().items():
        if "temporal" in key:
            continue
        assert torch.equal(value, image_state[key]), key
    x, t, cond = _inputs(video, frames=4)
    with torch.no_grad():
        out = video(x, t, cond)
        scale = out.abs().max().item()
        for f in range(4):
            torch.testing.assert_close(out[:, :, f], image(x[:, :, f], t, cond), rtol=1e-4, atol=1e-5 * scale)
    with pytest.raises(ValueError, match="needs an image model"):
        models.video_from_image(video)
    if name == "dit-tiny":
        with pytest.raises(ValueError, match="tubelet"):
            models.video_from_image(image, tubelet=2)


@pytest.mark.parametrize("name", ["video-unet-tiny", "video-dit-tiny"])
def test_one_frame_clips_skip_the_temporal_layers(name):
    # Joint image-video training feeds images as one-frame clips: trained temporal layers
    # must leave them alone, so the output equals the image twin's.
    overrides = {"tubelet": 1} if "dit" in name else {}
    video = _randomize(models.create(name, **overrides)).eval()
    image = type(video).from_config({**video.config.__dict__, "video": False})
    image.load_state_dict({k: v for k, v in video.state_dict().items() if "temporal" not in k})
    image.eval()
    x, t, cond = _inputs(video, frames=1)
    with torch.no_grad():
        torch.testing.assert_close(video(x, t, cond)[:, :, 0], image(x[:, :, 0], t, cond), rtol=1e-5, atol=1e-6)


def test_temporal_mlp_ratio_sizes_the_temporal_blocks():
    small = models.create("video-dit-tiny", temporal_mlp_ratio=1.0)
    big = models.create("video-dit-tiny")
    assert small.temporal_blocks[0].mlp[0].out_features == 64
    assert big.temporal_blocks[0].mlp[0].out_features == 256
    assert small.blocks[0].mlp[0].out_features == 256


def test_temporal_cross_attention_reads_the_text_and_starts_at_zero():
    net = models.create("video-dit-tiny", tubelet=1, temporal_cross_attention=True)
    assert all(block.cross is not None for block in net.temporal_blocks)
    plain = models.create("video-dit-tiny", tubelet=1)
    assert all(block.cross is None for block in plain.temporal_blocks)
    _randomize(net).eval()
    x, t, cond = _inputs(net, frames=3)
    other = {**cond, "text": cond["text"] + 1.0}
    with torch.no_grad():
        base = net(x, t, cond)
        for block in net.blocks:  # silence the spatial text path: only the temporal one is left
            block.cross.to_out.weight.zero_()
            block.cross.to_out.bias.zero_()
        assert not torch.allclose(net(x, t, cond), net(x, t, other))
        for block in net.temporal_blocks:
            block.cross.to_out.weight.zero_()
            block.cross.to_out.bias.zero_()
        torch.testing.assert_close(net(x, t, cond), net(x, t, other))
    assert base.shape == x.shape


def test_a_block_conditions_groups_of_rows_like_their_rows_repeated():
    # A clip's frames (or positions) share one conditioning; passing it once per group
    # must equal passing a copy per row, the plain per-row reference.
    torch.manual_seed(0)
    block = DiTBlock(32, 4, 2.0, context_dim=32)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    groups, rows = 3, 5
    x, c = torch.randn(groups * rows, 7, 32), torch.randn(groups, 32)
    ctx, mask = torch.randn(groups, 4, 32), torch.rand(groups, 4) > 0.3
    with torch.no_grad():
        grouped = block(x, c, ctx, mask)
        per_row = block(x, *(v.repeat_interleave(rows, 0) for v in (c, ctx, mask)))
    torch.testing.assert_close(grouped, per_row, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not split into 4"):
        block(x, torch.randn(4, 32), None)


@pytest.mark.parametrize("keys", [3, 8, 64, 65, 200])
def test_attention_equals_the_fused_kernel_with_and_without_a_mask(keys):
    from models.blocks import attention

    torch.manual_seed(keys)
    q, k, v = torch.randn(4, 2, 9, 16), torch.randn(4, 2, keys, 16), torch.randn(4, 2, keys, 16)
    mask = torch.rand(4, 1, 1, keys) > 0.4
    mask[..., 0] = True  # every row attends somewhere
    for m in (None, mask):
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
        torch.testing.assert_close(attention(q, k, v, m), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True])  # inference, and training (gradients through the blocks)
@pytest.mark.parametrize("block", [10 ** 9, 200, 30])  # one block, whole sequences a block, query rows a block
def test_bf16_attention_in_blocks_equals_the_fused_kernel(monkeypatch, block, grad):
    import models.blocks
    from models.blocks import attention

    monkeypatch.setattr(models.blocks, "PLAIN_BLOCK_TRAIN" if grad else "PLAIN_BLOCK", block)
    monkeypatch.setattr(models.blocks, "PLAIN_BLOCK" if grad else "PLAIN_BLOCK_TRAIN", 1)  # the other: unused
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 9, 16), torch.randn(3, 2, 11, 16), torch.randn(3, 2, 11, 16)
    mask = torch.rand(3, 1, 1, 11) > 0.4
    mask[..., 0] = True
    calls = []
    monkeypatch.setattr(models.blocks, "_plain", lambda *a, _f=models.blocks._plain: calls.append(a[0].shape) or _f(*a))
    weight = torch.randn(3, 2, 9, 16)
    for m in (None, mask):
        leaves = [t.clone().requires_grad_(grad) for t in (q, k, v)]
        expected = torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=m)  # fp32 reference
        with torch.set_grad_enabled(grad):
            low = [t.detach().bfloat16().requires_grad_(grad) for t in leaves]
            got = attention(*low, m)
        assert got.dtype == torch.bfloat16 and got.shape == expected.shape and got.requires_grad == grad
        torch.testing.assert_close(got.float(), expected, rtol=0, atol=0.03)  # bf16 inputs and scores
        if grad:  # the gradients of every input against the fused kernel's in fp32
            (got.float() * weight).sum().backward()
            (expected * weight).sum().backward()
            for a, b in zip(low, leaves):
                torch.testing.assert_close(a.grad.float(), b.grad, rtol=0, atol=0.1)
    # 6 sequences of 9 queries x 11 keys (99 scores each): 1 block, blocks of 2 sequences, blocks of 2 rows
    blocks = {10 ** 9: 1, 200: 3, 30: 6 * 5}[block]
    assert len(calls) == 2 * blocks and all(c[:-1].numel() * 11 <= block for c in calls)


def test_bf16_attention_with_gradients_past_the_cap_is_the_fused_kernel(monkeypatch):
    """Autograd keeps every probability of the plain ops: past PLAIN_TRAIN_MAX score elements a
    training step takes the fused kernel (memory linear in the length); inference stays plain."""
    import models.blocks
    from models.blocks import attention

    calls = []
    monkeypatch.setattr(models.blocks, "_plain", lambda *a, _f=models.blocks._plain: calls.append(1) or _f(*a))
    monkeypatch.setattr(models.blocks, "PLAIN_TRAIN_MAX", 2 * 3 * 80 * 80 - 1)  # one score element short
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 80, 16).bfloat16() for _ in range(3))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    got = attention(*leaves)
    assert not calls  # the fused kernel
    expected = torch.nn.functional.scaled_dot_product_attention(*(t.detach().float().requires_grad_() for t in leaves))
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=0.03)
    with torch.no_grad():
        attention(q, k, v)
    assert calls  # inference: the plain blocks
    monkeypatch.setattr(models.blocks, "PLAIN_TRAIN_MAX", 2 * 3 * 80 * 80)
    calls.clear()
    attention(*leaves)
    assert calls  # at the cap: the plain blocks


def test_tanh_gelu_is_the_tanh_form_and_in_bf16_within_its_rounding():
    from models.blocks import TanhGELU

    x = torch.linspace(-6, 6, 4001).bfloat16().float()  # values bf16 holds exactly
    x64 = x.double().requires_grad_()
    reference = torch.nn.functional.gelu(x64, approximate="tanh")
    (slope,) = torch.autograd.grad(reference.sum(), x64)
    reference = reference.detach()
    gelu = TanhGELU()
    assert torch.equal(gelu(x), torch.nn.GELU(approximate="tanh")(x))  # fp32: the tanh form itself
    with torch.no_grad():
        fast = gelu(x.bfloat16())
    assert fast.dtype == torch.bfloat16
    # the erf form is within 5e-4 of the tanh one before rounding: at most one bf16 step off
    spacing = 2.0 ** (torch.floor(torch.log2(reference.abs().clamp_min(1e-3))) - 7)
    assert ((fast.double() - reference).abs() <= spacing + 5e-4).all()
    # training in bf16: the same forward, and the derivative within 1e-3 of the tanh form's (+ one bf16 step)
    xg = x.bfloat16().requires_grad_()
    out = gelu(xg)
    assert torch.equal(out, fast)
    out.sum().backward()
    step = 2.0 ** (torch.floor(torch.log2(slope.abs().clamp_min(1e-3))) - 7)
    assert ((xg.grad.double() - slope).abs() <= step + 1e-3).all()


@pytest.mark.parametrize("mode", ["position", "clip"])
def test_clip_temporal_blocks_read_other_positions_of_other_frames(mode):
    # "position": a temporal block sees the frames at one token position only; "clip": every
    # (pooled) token of the clip, so a change at one corner of frame 0 reaches the far corner
    # of frame 2 within the block itself.
    net = models.create("video-dit-tiny", tubelet=1, temporal_mode=mode).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # small weights: soft attention
        for p in net.temporal_blocks[0].parameters():
            p.normal_(std=0.05)
    b, frames, rows, dim = 2, 3, 8, net.config.hidden_size
    h = torch.randn(b * frames, rows * rows, dim)
    h2 = h.clone()
    h2[0, 0] += torch.randn(dim)  # clip 0, frame 0, top-left token
    c, time_pos = torch.randn(b, dim), torch.randn(frames, dim)
    with torch.no_grad():
        out, out2 = (net.temporal(net.temporal_blocks[0], x, b, (rows, rows), c, None, None, time_pos) for x in (h, h2))
    far = (out2 - out)[2, -1]  # clip 0, frame 2, bottom-right token
    if mode == "clip":
        assert far.abs().max() > 1e-5  # ~1e-3 with these weights
    else:
        assert torch.equal(far, torch.zeros_like(far))
    assert torch.equal(out[frames:], out2[frames:])  # the other clip is untouched


def test_clip_temporal_mode_names_bad_settings():
    with pytest.raises(ValueError, match="temporal_mode must be one of position, clip"):
        models.create("video-dit-tiny", temporal_mode="diagonal")
    with pytest.raises(ValueError, match="temporal_pool must be a positive integer"):
        models.create("video-dit-tiny", temporal_pool=0)
    net = models.create("video-dit-tiny", tubelet=1, temporal_mode="clip", temporal_pool=4)
    x, t, cond = _inputs(net, frames=2, size=12)  # 6x6 tokens with patch 2
    with pytest.raises(ValueError, match="temporal_pool 4 needs a token grid divisible by 4, got 6x6"):
        net(x, t, cond)


def test_extend_adds_a_motion_path_at_identity_and_refuses_to_change_layers():
    net = _randomize(models.create("video-dit-tiny", tubelet=1)).eval()
    moving = models.extend(net, temporal_conv=8).eval()
    assert len(moving.temporal_convs) == net.config.depth and not net.temporal_convs
    state = moving.state_dict()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    x, t, cond = _inputs(net, frames=3)
    with torch.no_grad():
        assert torch.equal(moving(x, t, cond), net(x, t, cond))  # the new branch adds exact zeros
    with pytest.raises(ValueError, match="changes existing layers"):
        models.extend(net, hidden_size=32)
    with pytest.raises(ValueError, match="removes layers"):
        models.extend(moving, temporal_conv=0)


def test_motion_conv_reaches_one_frame_and_one_token_around_and_the_prompt_can_close_it():
    torch.manual_seed(0)
    conv = MotionConv(16, 6)
    with torch.no_grad():
        for p in conv.parameters():
            p.normal_(std=0.3)
    b, frames, rows = 2, 4, 6
    h = torch.randn(b * frames, rows * rows, 16)
    c = torch.randn(b, 16)
    h2 = h.clone()
    h2[1, 2 * rows + 3] += torch.randn(16)  # clip 0, frame 1, token (row 2, column 3)
    with torch.no_grad():
        reach = (conv(h2, c, (rows, rows)) - conv(h, c, (rows, rows))).abs().amax(-1) > 0
    expected = torch.zeros(b, frames, rows, rows, dtype=torch.bool)
    expected[0, 0:3, 1:4, 2:5] = True  # frames 0-2, the 3x3 tokens around (2, 3)
    assert torch.equal(reach.reshape(b, frames, rows, rows), expected)
    with torch.no_grad():  # a conditioning that scales every channel by 1 + (-1) = 0 closes the path
        conv.ada.weight.zero_()
        conv.ada.bias.copy_(torch.cat([torch.zeros(6), -torch.ones(6)]))
        residual = conv(h, c, (rows, rows)) - h
        torch.testing.assert_close(conv(h2, c, (rows, rows)) - h2, residual)


def test_temporal_conv_names_bad_settings():
    with pytest.raises(ValueError, match="temporal_conv is a channel count"):
        models.create("video-dit-tiny", temporal_conv=-1)
    with pytest.raises(ValueError, match="temporal_conv=4 needs a video DiT with factorised attention"):
        models.create("dit-tiny", temporal_conv=4)
    with pytest.raises(ValueError, match="attention='full'"):
        models.create("video-dit-tiny", temporal_conv=4, attention="full")


@pytest.mark.parametrize("width", [4, 32])
def test_motion_conv_bf16_gradients_match_float32(width):
    # Guards a CPU kernel fault: a bf16 depthwise Conv3d fed a channels-last-ordered input
    # returns a wrong weight gradient on small clips (here 2 frames of 4x4 tokens).
    torch.manual_seed(0)
    conv = MotionConv(16, width)
    with torch.no_grad():
        for p in conv.parameters():
            p.normal_(std=0.3)
    h, c = torch.randn(2 * 2, 16, 16), torch.randn(2, 16)

    def grads(bf16: bool):
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(h, c, (4, 4)).float().square().sum().backward()
        return {name: p.grad.clone() for name, p in conv.named_parameters()}

    exact, low = grads(False), grads(True)
    for name, g in exact.items():
        assert (low[name] - g).abs().max() <= 0.05 * g.abs().max(), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 64, 9, 7), (2, 12, 3, 5, 4)])
def test_group_norm_under_compile_equals_the_native_op(dtype, shape):
    # Traced by dynamo (backend "eager": the traced graph, run by torch), GroupNorm takes its
    # per-channel form; it must give the native op's values and gradients, float64 the reference.
    from models.blocks import group_norm

    torch.manual_seed(0)
    norm = group_norm(shape[1])
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.5)
        norm.bias.normal_(0.0, 0.5)
    x = (torch.randn(shape) * 3 + 2).to(dtype)  # a mean well off zero: the mean-square form's hard case
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(shape).to(dtype)
    x64 = x.double().requires_grad_()
    w64, b64 = (p.detach().double().requires_grad_() for p in (norm.weight, norm.bias))
    reference = torch.nn.functional.group_norm(x64, norm.num_groups, w64, b64, norm.eps)
    reference.backward(grad_out.double())

    def run(module):
        xg = x.detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = module(xg)
        out.backward(grad_out)
        grads = (xg.grad, norm.weight.grad.clone(), norm.bias.grad.clone())
        norm.zero_grad(set_to_none=True)
        return out, grads

    native, native_grads = run(norm)  # eagerly: torch's own kernel
    compiled, compiled_grads = run(torch.compile(norm, backend="eager", fullgraph=True))
    assert compiled.dtype == native.dtype == dtype
    # as close to float64 as the native op is, give or take one rounding of the output type
    step = 1e-5 if dtype == torch.float32 else 2.0 ** -7
    scale = reference.abs().max().item()
    assert (compiled.double() - reference).abs().max() <= (native.double() - reference).abs().max() + step * scale
    for ours, theirs, exact in zip(compiled_grads, native_grads, (x64.grad, w64.grad, b64.grad)):
        size = exact.abs().max().item()
        assert (ours.double() - exact).abs().max() <= (theirs.double() - exact).abs().max() + step * size


@pytest.mark.parametrize("channels_last", [False, True])
def test_nearest_upsampling_under_compile_equals_interpolate(channels_last):
    from models.blocks import upsample_nearest_2x

    x = torch.randn(2, 5, 3, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 5, 6, 8)
    results = []
    for fn in (lambda t: torch.nn.functional.interpolate(t, scale_factor=2.0, mode="nearest"),
               upsample_nearest_2x, torch.compile(upsample_nearest_2x, backend="eager", fullgraph=True)):
        xg = x.detach().requires_grad_()
        out = fn(xg)
        out.backward(grad_out)
        results.append((out, xg.grad))
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0])
        torch.testing.assert_close(grad, results[0][1], rtol=1e-6, atol=1e-6)  # the same 4 terms, another order
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
