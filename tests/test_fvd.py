"""FVD: metrics.i3d (the I3D as a native module), scripts/convert_i3d.py (the TorchScript -> safetensors
conversion) and metrics.fvd (the protocol and the distance), checked against things built independently
here: TF 'SAME' padding in its other closed form, a brute-force max pool, a bilinear resize written as
interpolation matrices, an I3D built from torch primitives in hassony2's i3dpt layout and scripted to a
TorchScript archive like StyleGAN-V's, pytorch-fid's Frechet distance and Gaussians with known moments."""

import importlib.util
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from metrics.fvd import FVD_FRAMES, check_clips, clip_features, fvd, quantize
from metrics.i3d import (CONVERTED_FILENAME, I3D, Unit3D, i3d_from_state_dict, i3d_weights, load_i3d,
                         max_pool_same, same_padding)
from metrics.weights import REGISTRY, WeightsNotFoundError

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 0.125  # every channel count / 8: the architecture at 1/64 of the compute

pytestmark = pytest.mark.usefixtures("one_thread")  # a second torch thread only spins against the other jobs


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_i3d", ROOT / "scripts" / "convert_i3d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def converter():
    return load_converter()


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty, private caches: $GEN_WEIGHTS, $TORCH_HOME, the Hugging Face hub cache."""
    dirs = {k: tmp_path / k for k in ("gen", "torch", "hf")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("GEN_WEIGHTS", str(dirs["gen"]))
    monkeypatch.setenv("TORCH_HOME", str(dirs["torch"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["hf"]))
    return dirs


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep activations O(1) through the whole network: He-scaled convolutions,
    batch norm statistics and affines away from the identity."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, v in module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = v
        elif v.dim() == 5:
            state[key] = torch.randn(v.shape, generator=g) * math.sqrt(2 / v[0].numel())
        elif key.endswith(("running_var", "weight")):
            state[key] = torch.rand(v.shape, generator=g) + 0.5
        else:  # running_mean, bn bias, logits bias
            state[key] = torch.randn(v.shape, generator=g) * 0.1
    module.load_state_dict(state)
    return module.eval()


def clips(seed: int, batch: int = 2, frames: int = 16, size=(48, 64)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, frames, *size), dtype=torch.uint8, generator=g)


# ----------------------------------------------------------------------------- TF 'SAME' padding, closed form

def tf_same_total(n: int, k: int, s: int) -> int:
    """TF's padding along one side, in the form of its documentation (and of the StackOverflow answer the
    PyTorch ports cite): k - s when s divides n, else k - (n mod s), never negative."""
    return max(k - s, 0) if n % s == 0 else max(k - n % s, 0)


def test_same_padding_is_tfs_closed_form():
    for n in range(1, 40):
        for k in range(1, 8):
            for s in range(1, 4):
                total = tf_same_total(n, k, s)
                assert same_padding(n, k, s) == (total // 2, total - total // 2), (n, k, s)
                assert (n + total - k) // s + 1 == math.ceil(n / s), (n, k, s)  # 'SAME': ceil(n / s) outputs


def test_max_pool_same_against_brute_force():
    g = torch.Generator().manual_seed(0)
    for n in range(1, 13):
        for k in range(1, 5):
            for s in range(1, 4):
                x = torch.randn(1, 1, n, 1, 1, generator=g) - 5  # negative: zero padding would show
                got = max_pool_same(x, (k, 1, 1), (s, 1, 1)).flatten().tolist()
                before = tf_same_total(n, k, s) // 2
                want = [max(x.flatten()[j].item() for j in range(i * s - before, i * s - before + k) if 0 <= j < n)
                        for i in range(math.ceil(n / s))]
                assert got == pytest.approx(want), (n, k, s)


def test_unit3d_is_padded_conv_batch_norm_relu():
    unit = randomize(Unit3D(4, 5, kernel=(7, 7, 7), stride=(2, 2, 2)), seed=1)
    x = torch.randn(2, 4, 9, 11, 10, generator=torch.Generator().manual_seed(2))  # odd sides: uneven padding
    pads = []
    for n, k, s in zip(reversed(x.shape[2:]), (7, 7, 7), (2, 2, 2)):  # F.pad order: W, H, T
        total = tf_same_total(n, k, s)
        pads += [total // 2, total - total // 2]
    y = F.conv3d(F.pad(x, pads), unit.conv.weight, stride=2)
    bn = unit.bn
    shape = (1, -1, 1, 1, 1)
    y = (y - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + 1e-3) * bn.weight.view(shape)
    expected = torch.relu(y + bn.bias.view(shape))
    assert unit(x).shape == (2, 5, 5, 6, 5)
    torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)
    logits = Unit3D(4, 3, logits=True)  # the classifier: a biased 1x1x1 conv, nothing else
    torch.testing.assert_close(logits(x), F.conv3d(x, logits.conv.weight, logits.conv.bias))
    assert logits.bn is None and (logits(x) < 0).any()


# -------------------------------------------------------------------------------- the protocol's preprocessing

def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of a 1-D linear resize with half-pixel centres (align_corners=False), edges
    clamped: source position (i + 0.5) n_in / n_out - 0.5."""
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(src), n_in - 1)
        frac = src - i0
        w[i, i0] += 1 - frac
        w[i, min(i0 + 1, n_in - 1)] += frac
    return w


def test_preprocess_rescales_and_resizes_each_frame_bilinearly():
    i3d = I3D(width=WIDTH)
    u8 = clips(0, batch=1, frames=9, size=(5, 7))
    x = i3d.preprocess(u8)  # (1, 3, 9, 224, 224)
    assert x.shape == (1, 3, 9, 224, 224) and x.dtype == torch.float32
    rows, cols = bilinear_matrix(5, 224), bilinear_matrix(7, 224)
    frames = u8.double() / 255 * 2 - 1  # StyleGAN-V's rescale
    expected = torch.einsum("ih,bcthw,jw->bctij", rows, frames, cols)
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(i3d.preprocess(u8.float() / 127.5 - 1), x, rtol=0, atol=1e-6)  # [-1, 1] floats
    big = clips(1, batch=1, frames=9, size=(224, 224))
    torch.testing.assert_close(i3d.preprocess(big), big.float() / 255 * 2 - 1)  # 224 is left as it is
    with pytest.raises(ValueError, match=r"\[-1, 1\].*x / 127.5 - 1"):
        i3d(u8.float())  # [0, 255] floats: the classic FVD mistake
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\).*permute"):
        i3d(u8.permute(0, 2, 1, 3, 4))


def test_i3d_shapes_frames_and_time_averaging():
    i3d = randomize(I3D(width=WIDTH))
    out = i3d(clips(0))
    assert out.shape == (2, 400) and out.std() > 0.1 and not i3d.training
    assert i3d(clips(0, frames=9)).shape == (2, 400)  # the fewest frames the pools leave something of
    with pytest.raises(ValueError, match="at least 9 frames.*got 8"):
        i3d(clips(0, frames=8))
    # 32 frames reach the average pool as 4 steps: 3 windows, whose logits are averaged over time
    x = i3d.preprocess(clips(3, batch=1, frames=32))
    captured = {}
    handle = i3d.Logits.register_forward_hook(lambda m, inp, output: captured.update(y=output))
    got = i3d.logits(x)
    handle.remove()
    assert captured["y"].shape == (1, 400, 3, 1, 1)
    torch.testing.assert_close(got, captured["y"].flatten(2).mean(2))
    i3d.train()
    assert not i3d.training and not any(p.requires_grad for p in i3d.parameters())


# ------------------------------------------------------------- an independent I3D in hassony2's i3dpt layout

def ref_pads(kernel, stride, time_mod: int = 0) -> list[int]:
    """i3dpt's padding, as F.pad wants it (W, H, T): k - s split floor / ceil; along a strided time axis
    whose length is odd, k - (T mod s) instead."""
    pads = []
    for d in (2, 1, 0):
        total = max(kernel[d] - (time_mod if d == 0 and time_mod else stride[d]), 0)
        pads += [total // 2, total - total // 2]
    return pads


class RefUnit(nn.Module):
    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        self.stride_t = stride[0]
        self.pad_even, self.pad_odd = ref_pads(kernel, stride), ref_pads(kernel, stride, 1)
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=False)
        self.batch3d = nn.BatchNorm3d(cout, eps=1e-3)

    def forward(self, x):
        pad = self.pad_odd if x.shape[2] % self.stride_t == 1 else self.pad_even
        return F.relu(self.batch3d(self.conv3d(F.pad(x, pad))))


class RefPool(nn.Module):
    """i3dpt's MaxPool3dTFPadding: zero padding of k - s, then a max pool with ceil_mode."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.pad, self.kernel, self.stride = ref_pads(kernel, stride), list(kernel), list(stride)

    def forward(self, x):
        return F.max_pool3d(F.pad(x, self.pad), self.kernel, self.stride, ceil_mode=True)


class RefLogits(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv3d = nn.Conv3d(cin, cout, 1, bias=True)

    def forward(self, x):
        return self.conv3d(x)


class RefMixed(nn.Module):
    def __init__(self, cin: int, c: list[int]):
        super().__init__()
        self.branch_0 = RefUnit(cin, c[0])
        self.branch_1 = nn.Sequential(RefUnit(cin, c[1]), RefUnit(c[1], c[2], (3, 3, 3)))
        self.branch_2 = nn.Sequential(RefUnit(cin, c[3]), RefUnit(c[3], c[4], (3, 3, 3)))
        self.branch_3 = nn.Sequential(RefPool((3, 3, 3), (1, 1, 1)), RefUnit(cin, c[5]))

    def forward(self, x):
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], dim=1)


# Kinetics I3D's blocks as (input channels, six outputs), typed from DeepMind's i3d.py for this test
REF_BLOCKS = {"mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
              "mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
              "mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
              "mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
              "mixed_5c": (832, (384, 192, 384, 48, 128, 128))}


class RefI3D(nn.Module):
    """hassony2/kinetics_i3d_pytorch `I3D` (src/i3dpt.py) rebuilt from torch primitives, with StyleGAN-V's
    detector signature: forward(x, rescale, resize, return_features). `align_corners` lets a test give it
    a resize other than the protocol's."""

    def __init__(self, width: float = 1.0, align_corners: bool = False):
        super().__init__()
        c = lambda n: round(n * width)  # noqa: E731
        self.align_corners = align_corners
        self.conv3d_1a_7x7 = RefUnit(3, c(64), (7, 7, 7), (2, 2, 2))
        self.maxPool3d_2a_3x3 = RefPool((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = RefUnit(c(64), c(64))
        self.conv3d_2c_3x3 = RefUnit(c(64), c(192), (3, 3, 3))
        self.maxPool3d_3a_3x3 = RefPool((1, 3, 3), (1, 2, 2))
        self.mixed_3b = RefMixed(c(192), [c(n) for n in REF_BLOCKS["mixed_3b"][1]])
        self.mixed_3c = RefMixed(c(256), [c(n) for n in REF_BLOCKS["mixed_3c"][1]])
        self.maxPool3d_4a_3x3 = RefPool((3, 3, 3), (2, 2, 2))
        self.mixed_4b = RefMixed(c(480), [c(n) for n in REF_BLOCKS["mixed_4b"][1]])
        self.mixed_4c = RefMixed(c(512), [c(n) for n in REF_BLOCKS["mixed_4c"][1]])
        self.mixed_4d = RefMixed(c(512), [c(n) for n in REF_BLOCKS["mixed_4d"][1]])
        self.mixed_4e = RefMixed(c(512), [c(n) for n in REF_BLOCKS["mixed_4e"][1]])
        self.mixed_4f = RefMixed(c(528), [c(n) for n in REF_BLOCKS["mixed_4f"][1]])
        self.maxPool3d_5a_2x2 = RefPool((2, 2, 2), (2, 2, 2))
        self.mixed_5b = RefMixed(c(832), [c(n) for n in REF_BLOCKS["mixed_5b"][1]])
        self.mixed_5c = RefMixed(c(832), [c(n) for n in REF_BLOCKS["mixed_5c"][1]])
        self.avg_pool = nn.AvgPool3d((2, 7, 7), (1, 1, 1))
        self.conv3d_0c_1x1 = RefLogits(c(1024), 400)

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x / 255 * 2 - 1
        if resize:
            b, c, t, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
            x = F.interpolate(x.reshape(b, c * t, h, w), size=(224, 224), mode="bilinear",
                              align_corners=self.align_corners).reshape(b, c, t, 224, 224)
        x = self.maxPool3d_2a_3x3(self.conv3d_1a_7x7(x))
        x = self.maxPool3d_3a_3x3(self.conv3d_2c_3x3(self.conv3d_2b_1x1(x)))
        x = self.maxPool3d_4a_3x3(self.mixed_3c(self.mixed_3b(x)))
        x = self.mixed_4f(self.mixed_4e(self.mixed_4d(self.mixed_4c(self.mixed_4b(x)))))
        x = self.mixed_5c(self.mixed_5b(self.maxPool3d_5a_2x2(x)))
        logits = self.conv3d_0c_1x1(self.avg_pool(x)).squeeze(3).squeeze(3).mean(2)
        return logits if return_features else F.softmax(logits, dim=1)


def scripted(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture(scope="module")
def reference_archive(tmp_path_factory, one_thread):
    """A random RefI3D at 1/8 width, its TorchScript archive on disk, and the archive loaded back."""
    path = scripted(randomize(RefI3D(WIDTH), seed=3), tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt")
    return path, torch.jit.load(str(path)).eval()


def test_block_channels_and_names_match_the_i3dpt_layout(converter):
    ours, ref = I3D().state_dict(), RefI3D().state_dict()  # full width: the published network's tensors
    assert [v.shape for k, v in ours.items() if not k.endswith("num_batches_tracked")] == \
        [v.shape for k, v in ref.items() if not k.endswith("num_batches_tracked")]  # same tensors, same order
    mapped, how = converter.map_state_dict(ref, ours)
    assert how == "i3dpt names" and set(mapped) == {k for k in ours if not k.endswith("num_batches_tracked")}
    for name, (cin, _) in REF_BLOCKS.items():  # each block's input is the previous block's (pooled) output
        assert ours[f"{name.capitalize()}.branch_0.conv.weight"].shape[1] == cin
    assert converter.map_state_dict(ours, ours)[1] == "names"
    assert converter.i3dpt_name("Mixed_5c.branch_3b.bn.running_var") == "mixed_5c.branch_3.1.batch3d.running_var"
    assert converter.pytorch_i3d_name("Logits.conv.bias") == "logits.conv3d.bias"


@torch.no_grad()
def test_converter_maps_an_i3dpt_archive_and_the_result_matches_it(converter, reference_archive, places, capsys):
    path, archive = reference_archive
    out = places["gen"] / CONVERTED_FILENAME
    assert converter.main([str(path), "--out", str(out), "--size", "40", "56"]) == 0
    printed = capsys.readouterr().out
    assert "by i3dpt names" in printed and "network" in printed and "protocol" in printed and "wrote" in printed
    assert "TF SAME pooling" not in printed  # at 18 frames i3dpt's fixed pool padding differs from TF 'SAME'
    i3d = load_i3d()  # found in $GEN_WEIGHTS
    assert i3d.width == WIDTH and i3d.num_classes == 400
    u8 = clips(5, size=(36, 52))  # StyleGAN-V's call on uint8 clips of another size
    expected = archive(u8.float(), rescale=True, resize=True, return_features=True)
    got = i3d(u8)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_converter_maps_by_stored_order_and_refuses_a_different_resize(converter, reference_archive, tmp_path,
                                                                       capsys):
    """Our own I3D, traced inside a scripted module with the detector signature: names the converter does not
    know (net.i3d.*), so the tensors are paired in stored order. Then a reference whose resize uses
    align_corners=True: the network agrees, the protocol does not, nothing is written."""
    i3d = randomize(I3D(width=WIDTH), seed=4)

    class Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.i3d = i3d

        def forward(self, x):
            return self.i3d.logits(x)

    class Detector(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
            if rescale:
                x = x / 255 * 2 - 1
            if resize:
                b, c, t, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
                x = F.interpolate(x.reshape(b, c * t, h, w), size=(224, 224), mode="bilinear",
                                  align_corners=False).reshape(b, c, t, 224, 224)
            return self.net(x)

    traced = torch.jit.trace(Logits(), torch.zeros(1, 3, 16, 224, 224), check_trace=False)
    path = scripted(Detector(traced), tmp_path / "ours.pt")
    out = tmp_path / "ours.safetensors"
    assert converter.main([str(path), "--out", str(out), "--size", "40", "56"]) == 0
    assert "by stored order" in capsys.readouterr().out
    back = load_i3d(out)
    for k, v in i3d.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)

    archive = torch.jit.load(str(reference_archive[0]))
    archive.align_corners = True  # the same archive, resizing with align_corners=True
    wrong = tmp_path / "corners.pt"
    archive.save(str(wrong))
    assert converter.main([str(wrong), "--out", str(tmp_path / "no.safetensors"), "--size", "40", "56"]) == 1
    printed = capsys.readouterr().out
    assert "protocol" in printed and "FAILED" in printed and "not written" in printed
    assert "nearest resize: bilinear, align_corners=True" in printed  # the diagnosis names the archive's resize
    assert not (tmp_path / "no.safetensors").exists()


def test_converter_refuses_what_is_not_an_i3d(converter):
    ours = {k: v for k, v in I3D(width=WIDTH).state_dict().items() if not k.endswith("num_batches_tracked")}
    with pytest.raises(ValueError, match="holds .* tensors"):
        converter.map_state_dict({"w": torch.ones(3)}, ours)
    shuffled = dict(reversed(list(ours.items())))  # unknown order of the right tensors: shapes disagree
    renamed = {f"x{i}": v for i, v in enumerate(shuffled.values())}
    with pytest.raises(ValueError, match="stored order: tensor #0"):
        converter.map_state_dict(renamed, ours)
    with pytest.raises(ValueError, match="not an I3D"):
        converter.infer_config({"w": torch.ones(8, 2, 7, 7, 7)})


# -------------------------------------------------------------------------------- finding and loading weights

def test_random_i3d_round_trips_through_safetensors(places):
    i3d = randomize(I3D(num_classes=10, width=WIDTH), seed=6)
    file = places["gen"] / "i3d-fvd" / CONVERTED_FILENAME  # $GEN_WEIGHTS/<name>/<file>, like every weight
    file.parent.mkdir()
    save_file({k: v.contiguous() for k, v in i3d.state_dict().items()}, str(file))
    assert i3d_weights() == file
    u8 = clips(7, batch=1, frames=9)
    for loaded in (load_i3d(), load_i3d(file), load_i3d(file.parent)):
        assert loaded.num_classes == 10 and loaded.width == WIDTH and not loaded.training
        torch.testing.assert_close(loaded(u8), i3d(u8), rtol=0, atol=0)
    partial = {k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.testing.assert_close(i3d_from_state_dict(partial)(u8), i3d(u8), rtol=0, atol=0)  # counters optional
    with pytest.raises(ValueError, match="missing .*Mixed_5c"):
        i3d_from_state_dict({k: v for k, v in partial.items() if not k.startswith("Mixed_5c.branch_0")})


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_missing_or_torchscript_weights_are_clear_errors_without_network(places, tmp_path):
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        load_i3d()
    assert time.perf_counter() - start < 2.0
    message = str(e.value)
    for part in (CONVERTED_FILENAME, REGISTRY["i3d-fvd"].filename, REGISTRY["i3d-fvd"].urls[0], str(places["gen"]),
                 "scripts/convert_i3d.py", "allow_download"):
        assert part in message, part
    archive = places["gen"] / REGISTRY["i3d-fvd"].filename  # the upstream TorchScript, not yet converted
    torch.jit.script(nn.Linear(3, 2)).save(str(archive))
    with pytest.raises(WeightsNotFoundError, match=f"TorchScript is at {re.escape(str(archive))}.*convert_i3d.py"):
        load_i3d()
    for given in (archive, places["gen"]):  # given explicitly, as the file or its folder: never loaded
        with pytest.raises(ValueError, match="TorchScript archive, which is never loaded.*convert_i3d.py"):
            load_i3d(given)
    with pytest.raises(WeightsNotFoundError, match="no file at"):
        load_i3d(tmp_path / "nothing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(other))
    with pytest.raises(ValueError, match="not an I3D state dict"):
        load_i3d(other)


# ------------------------------------------------------------------------------------------- FVD and protocol

def gaussian_features(n: int, mean: torch.Tensor, variances: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples whose sample mean is exactly `mean` and whose unbiased sample covariance is exactly
    diag(`variances`): centred, whitened random draws, scaled."""
    z = torch.randn(n, mean.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))
    z = torch.linalg.solve_triangular(chol, z.T, upper=False).T  # unbiased covariance I
    return mean + z * variances.sqrt()


def test_fvd_of_gaussians_with_known_moments_is_the_closed_form():
    d = 6
    m1, m2 = torch.arange(d, dtype=torch.float64), torch.linspace(1, -1, d, dtype=torch.float64)
    v1, v2 = torch.linspace(0.5, 3, d, dtype=torch.float64), torch.linspace(2, 0.1, d, dtype=torch.float64)
    n1, n2 = 40, 25
    real, fake = gaussian_features(n1, m1, v1, 0), gaussian_features(n2, m2, v2, 1)
    # diagonal covariances commute: d^2 = |m1 - m2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    unbiased = ((m1 - m2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum()
    assert fvd(real, fake, ddof=1) == pytest.approx(unbiased.item(), rel=1e-10)
    # StyleGAN-V's scatter / N: each covariance times (N - 1) / N
    biased = ((m1 - m2) ** 2).sum() + (((n1 - 1) / n1 * v1).sqrt() - ((n2 - 1) / n2 * v2).sqrt()).pow(2).sum()
    assert fvd(real, fake) == pytest.approx(biased.item(), rel=1e-10)
    assert fvd(real, real) == pytest.approx(0, abs=1e-9)
    assert fvd(real.float(), real.numpy()) == pytest.approx(0, abs=1e-4)  # float32 tensors, float64 arrays


def test_fvd_matches_pytorch_fid_on_full_covariances():
    from pytorch_fid.fid_score import calculate_frechet_distance

    g = torch.Generator().manual_seed(8)
    real = torch.randn(50, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    fake = torch.randn(30, 5, generator=g, dtype=torch.float64) + 0.3
    a, b = real.numpy(), fake.numpy()
    for ddof in (0, 1):
        expected = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False, ddof=ddof),
                                              b.mean(0), np.cov(b, rowvar=False, ddof=ddof))
        assert fvd(real, fake, ddof=ddof) == pytest.approx(expected, rel=1e-8)
    assert fvd(real, fake, ddof=0) != pytest.approx(fvd(real, fake, ddof=1), rel=1e-4)


def test_fvd_refuses_too_few_clips_and_mismatched_features():
    good = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least 2 clips.*fake_features has 1"):
        fvd(good, good[:1])
    with pytest.raises(ValueError, match="differ in width: 3 vs 2"):
        fvd(good, good[:, :2])
    with pytest.raises(ValueError, match="ddof"):
        fvd(good, good, ddof=2)


def test_clip_checks_name_the_length_and_the_fix():
    with pytest.raises(ValueError, match="clips have 8 frames.*16-frame clips.*16 consecutive frames"):
        check_clips(torch.zeros(2, 3, 8, 4, 4))
    with pytest.raises(ValueError, match="at least 2 clips.*got 1"):
        check_clips(torch.zeros(1, 3, 16, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\).*permute"):
        check_clips(torch.zeros(2, 16, 3, 4, 4))
    assert check_clips(torch.zeros(2, 3, 8, 4, 4), min_frames=8).shape == (2, 3, 8, 4, 4)  # knowingly another one
    gray = torch.rand(2, 1, FVD_FRAMES, 4, 4)
    rgb = check_clips(gray)
    assert rgb.shape == (2, 3, 16, 4, 4) and (rgb == gray).all()


def test_quantize_is_stylegan_vs_uint8_rule():
    u = torch.arange(256, dtype=torch.uint8)
    assert (quantize(u.float() / 127.5 - 1) == u).all()  # uint8 frames as [-1, 1] floats come back exactly
    x = torch.tensor([-1.5, -1.0, (0.5 / 127.5) - 1, (0.49 / 127.5) - 1, 0.0, 1.0, 2.0])
    assert quantize(x).tolist() == [0, 0, 1, 0, 128, 255, 255]  # (x + 1) * 127.5 rounded half up, clamped
    assert quantize(u) is u


def test_clip_features_batches_quantizes_and_checks():
    seen = []

    def extractor(batch):  # (B, 3, T, H, W) -> (B, 2)
        seen.append(batch.dtype)
        x = batch.double()
        return torch.stack([x.mean(dim=(1, 2, 3, 4)), x[:, 0, :, 0, 0].std(dim=1)], dim=1)

    floats = torch.rand(5, 3, FVD_FRAMES, 6, 6, generator=torch.Generator().manual_seed(9)) * 2 - 1
    whole = extractor(quantize(floats)).float()
    for batch_size in (1, 2, 5, 8):
        torch.testing.assert_close(clip_features(extractor, floats, batch_size=batch_size), whole)
    assert set(seen) == {torch.uint8}
    raw = clip_features(extractor, floats, batch_size=2, quantize_frames=False)
    torch.testing.assert_close(raw, extractor(floats).float())
    with pytest.raises(ValueError, match="clips have 15 frames"):
        clip_features(extractor, floats[:, :, :15])
    with pytest.raises(ValueError, match=r"\(B, d\) features, got \(2,\)"):
        clip_features(lambda b: b.float().mean(dim=(1, 2, 3, 4)), floats, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        clip_features(extractor, floats, batch_size=0)


@torch.no_grad()
def test_fvd_end_to_end_on_i3d_features():
    i3d = randomize(I3D(width=WIDTH), seed=10)
    video = torch.rand(3, 3, FVD_FRAMES, 32, 32, generator=torch.Generator().manual_seed(11)) * 2 - 1
    real = clip_features(i3d, video, batch_size=2)
    assert real.shape == (3, 400)
    with pytest.warns(UserWarning, match="n <= d"):  # 3 clips in 400 dimensions: rank-deficient, says so
        same = fvd(real, real.flip(0))
        moved = fvd(real, clip_features(i3d, (video * 0.5).flip(-1), batch_size=3))
    assert abs(same) < 1e-6 * real.pow(2).sum().item() and moved > 1.0


@pytest.mark.slow
@torch.no_grad()
def test_full_width_i3d_matches_the_i3dpt_reference(converter):
    ref = randomize(RefI3D(), seed=12)
    state, how = converter.map_state_dict(ref.state_dict(), I3D().state_dict())
    i3d = i3d_from_state_dict(state)
    u8 = clips(13, batch=1, size=(128, 128))
    torch.testing.assert_close(i3d(u8), ref(u8.float(), rescale=True, resize=True, return_features=True),
                               rtol=1e-4, atol=1e-4)
