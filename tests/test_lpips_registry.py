"""LPIPS's AlexNet backbone found through metrics.weights: cache files hash-checked, a named file taken as
given, and the distances equal the lpips package's with the same random backbone written in torchvision's
checkpoint format."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from metrics.reconstruction import alexnet_weights_path, lpips, lpips_network
from metrics.weights import REGISTRY, WeightsHashError, WeightsNotFoundError

pytestmark = pytest.mark.usefixtures("one_thread")
ALEXNET = REGISTRY["alexnet"].filename  # alexnet-owt-7be5be79.pth


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A random AlexNet backbone in torchvision's checkpoint layout (the `features.*` keys: 10 MB)."""
    import torchvision

    torch.manual_seed(1)
    state = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("alexnet") / "random-alexnet.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def caches(tmp_path, monkeypatch):
    for var, name in (("GEN_WEIGHTS", "gen"), ("TORCH_HOME", "torch"), ("HF_HUB_CACHE", "hf")):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(var, str(tmp_path / name))
    return tmp_path


def pin(monkeypatch, path):
    """Record `path`'s digest as the alexnet entry's (what the real file's name encodes)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(REGISTRY, "alexnet", dataclasses.replace(REGISTRY["alexnet"], sha256=digest))


def reference_lpips(path, monkeypatch):
    """The lpips package's LPIPS (v0.1, alex) whose torchvision AlexNet is built from `path`."""
    import lpips as lpips_package
    import torchvision

    build = torchvision.models.AlexNet

    def alexnet(*args, **kwargs):  # what lpips calls as tv.alexnet(pretrained=True)
        net = build()
        net.load_state_dict(torch.load(path, weights_only=True), strict=False)  # features only in the file
        return net

    monkeypatch.setattr(lpips_package.pretrained_networks.tv, "alexnet", alexnet)
    return lpips_package.LPIPS(net="alex", verbose=False).eval()


def images(seed, n=3, size=64):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_found_in_the_cache_matches_the_lpips_package(alexnet_file, caches, monkeypatch):
    cached = caches / "gen" / ALEXNET
    cached.write_bytes(alexnet_file.read_bytes())
    pin(monkeypatch, cached)
    network = lpips_network()  # $GEN_WEIGHTS, hash checked, weights_only load
    reference = reference_lpips(alexnet_file, monkeypatch)
    x, y = images(0), images(1)
    with torch.no_grad():
        got, expected = lpips(network, x, y), reference(x, y).flatten()
    assert got.min() > 0.01  # a real distance, not a degenerate network
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lpips(network, x, x), torch.zeros(3), rtol=0, atol=1e-6)


def test_cache_files_are_checked_named_files_are_not(alexnet_file, caches):
    assert lpips_network() is None  # nothing anywhere: LPIPS is optional for the trainer
    with pytest.raises(WeightsNotFoundError, match=f"(?s){ALEXNET}.*7be5be79.*Looked in.*{caches / 'gen'}"):
        lpips_network(missing_ok=False)
    hub = caches / "torch" / "hub" / "checkpoints" / ALEXNET
    assert alexnet_weights_path() == hub
    hub.parent.mkdir(parents=True)
    hub.write_bytes(alexnet_file.read_bytes())  # random bytes under the upstream name: refused
    with pytest.raises(WeightsHashError, match="prefix .*7be5be79"):
        lpips_network()
    assert lpips_network(weights=alexnet_file) is not None  # a file the caller names: used as given
    with pytest.raises(WeightsHashError):
        lpips_network(weights=alexnet_file, verify_hash=True)
    with pytest.raises(WeightsNotFoundError, match="no file at"):
        lpips_network(weights=caches / "missing.pth")  # a named file that is not there is an error, not None


def test_vgg_backbone_matches_the_lpips_package(tmp_path, monkeypatch):
    import lpips as lpips_package
    import torchvision

    torch.manual_seed(2)
    vgg = torchvision.models.vgg16()
    state = {k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}
    path = tmp_path / "random-vgg16.pth"
    torch.save(state, path)
    network = lpips_network(weights=path, net="vgg")  # a named file: taken as given
    build = torchvision.models.vgg16

    def vgg16(*args, **kwargs):  # what lpips calls as tv.vgg16(pretrained=True)
        net = build()
        net.load_state_dict(state, strict=False)
        return net

    monkeypatch.setattr(lpips_package.pretrained_networks.tv, "vgg16", vgg16)
    reference = lpips_package.LPIPS(net="vgg", verbose=False).eval()
    x, y = images(3), images(4)
    with torch.no_grad():
        got, expected = lpips(network, x, y), reference(x, y).flatten()
    assert got.min() > 0.01
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="net must be one of"):
        lpips_network(weights=path, net="squeeze")
