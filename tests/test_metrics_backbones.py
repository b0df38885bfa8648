"""metrics.weights (where the standard backbones' files are found) and metrics.backbones (the FID
Inception), checked with random weights written in the exact upstream formats and against the
reference implementations: pytorch-fid's InceptionV3, torchmetrics' and torch-fidelity's extractors."""

import ast
import dataclasses
import functools
import hashlib
import http.server
import math
import threading
import time
from pathlib import Path

import pytest
import torch

from metrics.backbones import FIDInceptionV3, fid_inception
from metrics.weights import REGISTRY, WeightsHashError, WeightsNotFoundError, load_state_dict, resolve

ROOT = Path(__file__).resolve().parents[1]
FID_FILE = REGISTRY["inception-fid"].filename  # pt_inception-2015-12-05-6726825d.pth
FIDELITY_FILE = REGISTRY["inception-fid-torch-fidelity"].filename

pytestmark = pytest.mark.usefixtures("one_thread")  # a second torch thread only spins against the other jobs


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty, private caches: $GEN_WEIGHTS, $TORCH_HOME, the Hugging Face hub cache."""
    dirs = {k: tmp_path / k for k in ("gen", "torch", "hf")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("GEN_WEIGHTS", str(dirs["gen"]))
    monkeypatch.setenv("TORCH_HOME", str(dirs["torch"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["hf"]))
    dirs["hub"] = dirs["torch"] / "hub" / "checkpoints"
    dirs["hub"].mkdir(parents=True)
    return dirs


def pin(monkeypatch, name, path, **changes):
    """Record `path`'s true digest and size for `name` (as a real download would have them)."""
    data = Path(path).read_bytes()
    new = dataclasses.replace(REGISTRY[name], **{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                 **changes})
    monkeypatch.setitem(REGISTRY, name, new)
    return new


# ------------------------------------------------------------------------------------------- the registry

def test_registry_names_hashes_and_sources():
    assert {"inception-fid", "inception-fid-torch-fidelity", "i3d-fvd", "clip-vit-b-32", "alexnet", "vgg16",
            "lpips-alex-heads", "lpips-vgg-heads"} <= set(REGISTRY)
    for name, s in REGISTRY.items():
        assert s.name == name and s.filename and s.urls and s.format in ("state_dict", "safetensors", "torchscript")
        if s.sha256 is not None:
            assert 8 <= len(s.sha256) <= 64 and int(s.sha256, 16) >= 0, name
        prefix = torch.hub.HASH_REGEX.search(s.filename)  # torch hub names files <stem>-<sha256 prefix>.<ext>
        if prefix and s.sha256:
            assert s.sha256.startswith(prefix.group(1)), name
        assert bool(s.hf_repo) == bool(s.hf_filename), name
    assert REGISTRY["i3d-fvd"].format == "torchscript" and REGISTRY["clip-vit-b-32"].open_clip == ("ViT-B-32", "openai")
    # the upstream file names are the ones the upstream libraries use
    import pytorch_fid.inception
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    assert pytorch_fid.inception.FID_WEIGHTS_URL in REGISTRY["inception-fid"].urls
    assert AlexNet_Weights.IMAGENET1K_V1.url.endswith("/" + REGISTRY["alexnet"].filename)
    assert VGG16_Weights.IMAGENET1K_V1.url.endswith("/" + REGISTRY["vgg16"].filename)
    with pytest.raises(KeyError, match="known: .*inception-fid"):
        resolve("inception")


def test_lpips_heads_found_in_the_installed_wheels_and_verified(places):
    import torchmetrics

    path = resolve("lpips-alex-heads")  # recorded full SHA-256 checked against the packaged file
    assert path.is_relative_to(Path(torchmetrics.__file__).parent) and path.name == "alex.pth"
    assert resolve("lpips-vgg-heads").name == "vgg.pth"
    assert set(load_state_dict(path)) >= {"lin0.model.1.weight", "lin4.model.1.weight"}


# ------------------------------------------------------------------------------------------- lookup order

def test_lookup_order_explicit_then_gen_weights_then_torch_hub(places, tmp_path, monkeypatch):
    blob = torch.arange(10.0)
    hub_file = places["hub"] / FID_FILE
    torch.save({"w": blob}, hub_file)
    pin(monkeypatch, "inception-fid", hub_file)
    assert resolve("inception-fid") == hub_file  # only in the torch hub cache

    sub = places["gen"] / "inception-fid" / FID_FILE  # $GEN_WEIGHTS/<name>/<file>
    sub.parent.mkdir()
    sub.write_bytes(hub_file.read_bytes())
    assert resolve("inception-fid") == sub
    flat = places["gen"] / FID_FILE  # $GEN_WEIGHTS/<file> comes first
    flat.write_bytes(hub_file.read_bytes())
    assert resolve("inception-fid") == flat

    mine = tmp_path / "elsewhere" / "inception.pth"  # an explicit path beats every cache: a file or its folder
    mine.parent.mkdir()
    mine.write_bytes(hub_file.read_bytes())
    assert resolve("inception-fid", path=mine) == mine
    assert resolve("inception-fid", path=places["hub"]) == hub_file
    torch.testing.assert_close(load_state_dict(resolve("inception-fid"))["w"], blob)
    with pytest.raises(WeightsNotFoundError, match="no file at .*nothing.pth"):
        resolve("inception-fid", path=tmp_path / "nothing.pth")


def test_hugging_face_cache(places, monkeypatch):
    from safetensors.torch import save_file

    s = REGISTRY["clip-vit-b-32"]
    repo = places["hf"] / ("models--" + s.hf_repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    file = repo / "snapshots" / commit / s.hf_filename
    file.parent.mkdir(parents=True)
    save_file({"visual.proj": torch.ones(3, 2)}, str(file))
    assert resolve("clip-vit-b-32") == file  # no digest recorded: found and returned unchecked
    assert load_state_dict(file)["visual.proj"].shape == (3, 2)
    pin(monkeypatch, "clip-vit-b-32", file, size=None)
    assert resolve("clip-vit-b-32") == file


# ------------------------------------------------------------------------------------- verification, errors

def test_hash_and_size_mismatch_name_expected_and_actual(places, monkeypatch):
    bad = places["gen"] / FID_FILE
    bad.write_bytes(b"not the inception weights")
    with pytest.raises(WeightsHashError, match=r"is 25 bytes, but inception-fid .* is 95,628,359 bytes"):
        resolve("inception-fid")
    monkeypatch.setitem(REGISTRY, "inception-fid", dataclasses.replace(REGISTRY["inception-fid"], size=None))
    with pytest.raises(WeightsHashError) as e:
        resolve("inception-fid")
    assert REGISTRY["inception-fid"].sha256 in str(e.value) and sha256(bad) in str(e.value)
    assert resolve("inception-fid", verify_hash=False) == bad
    (places["hub"] / REGISTRY["alexnet"].filename).write_bytes(b"x")  # a known 8-digit prefix is checked too
    with pytest.raises(WeightsHashError, match="prefix .*7be5be79"):
        resolve("alexnet")


def test_missing_file_is_one_clear_error_without_network(places):
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        resolve("inception-fid")
    assert time.perf_counter() - start < 2.0
    message = str(e.value)
    s = REGISTRY["inception-fid"]
    for part in (s.filename, s.sha256, s.urls[0], str(places["gen"]), str(places["hub"]), "allow_download"):
        assert part in message, part
    with pytest.raises(WeightsNotFoundError) as e:
        resolve("clip-vit-b-32")
    assert str(places["hf"]) in str(e.value) and "huggingface-cli download" in str(e.value)
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=f"(?s){FID_FILE}.*{FIDELITY_FILE}"):
        fid_inception()  # either upstream file would do: the error says so
    assert time.perf_counter() - start < 2.0


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/www (no internet involved); proxies bypassed."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once closed: connection refused


def test_download_only_when_allowed_one_attempt_per_url(places, server, monkeypatch):
    www, url = server
    torch.save({"w": torch.ones(4)}, www / FID_FILE)
    refused = f"http://127.0.0.1:{closed_port()}/{FID_FILE}"
    pin(monkeypatch, "inception-fid", www / FID_FILE, urls=(refused, f"{url}/{FID_FILE}"))
    with pytest.raises(WeightsNotFoundError):
        resolve("inception-fid")  # not allowed: nothing fetched
    assert not (places["gen"] / FID_FILE).exists()
    path = resolve("inception-fid", allow_download=True)  # the refused URL is skipped, the next one used
    assert path == places["gen"] / FID_FILE and sha256(path) == sha256(www / FID_FILE)

    monkeypatch.setitem(REGISTRY, "inception-fid", dataclasses.replace(REGISTRY["inception-fid"], urls=(refused,)))
    path.unlink()
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="download failed .*127.0.0.1"):
        resolve("inception-fid", allow_download=True)
    assert time.perf_counter() - start < 5.0

    (www / "wrong.pth").write_bytes(b"tampered")  # a wrong digest never takes the file's name
    monkeypatch.setitem(REGISTRY, "inception-fid",
                        dataclasses.replace(REGISTRY["inception-fid"], urls=(f"{url}/wrong.pth",)))
    with pytest.raises(WeightsNotFoundError, match="SHA-256"):
        resolve("inception-fid", allow_download=True)
    assert list(places["gen"].iterdir()) == []


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_torchscript_and_pickled_objects_are_refused(places, tmp_path):
    i3d = places["gen"] / REGISTRY["i3d-fvd"].filename  # the FVD detector's upstream format: TorchScript
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(i3d))
    assert resolve("i3d-fvd") == i3d
    with pytest.raises(ValueError, match="TorchScript archive.*torch.jit.load.*safetensors"):
        load_state_dict(i3d)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(3, 2), module)  # a whole pickled module
    with pytest.raises(ValueError, match="pickled Python objects"):
        load_state_dict(module)
    nested = tmp_path / "nested.pt"
    torch.save({"model": {"w": torch.ones(1)}, "step": 3}, nested)
    with pytest.raises(ValueError, match="flat state dict"):
        load_state_dict(nested)


def test_metrics_import_neither_gen_nor_samplers():
    for file in ("metrics/weights.py", "metrics/backbones.py"):
        tree = ast.parse((ROOT / file).read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level]
        assert not [m for m in names if m.split(".")[0] in ("gen", "samplers", "models")], file


# ---------------------------------------------------------------------------- the FID Inception, end to end

def random_fid_inception_state() -> dict:
    """Random weights with the upstream file's keys and shapes (torchvision's Inception3, 1008 classes, no
    aux head), scaled so activations stay O(1) through the network and every feature is exercised."""
    from torchvision.models import inception_v3

    g = torch.Generator().manual_seed(0)
    state = {}
    for key, v in inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False).state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = v
        elif v.dim() > 1:  # conv and fc weights: He scale
            state[key] = torch.randn(v.shape, generator=g) * math.sqrt(2 / v[0].numel())
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.rand(v.shape, generator=g) + 0.5
        else:  # running_mean, bn.bias, fc.bias
            state[key] = torch.randn(v.shape, generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, one_thread):
    """The random weights saved under pytorch-fid's file name, and pytorch-fid's own InceptionV3 loaded from
    it by pytorch-fid itself (it finds the file in the torch hub cache: no download)."""
    from pytorch_fid.inception import InceptionV3

    torch_home = tmp_path_factory.mktemp("torch_home")
    file = torch_home / "hub" / "checkpoints" / FID_FILE
    file.parent.mkdir(parents=True)
    torch.save(random_fid_inception_state(), file)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        reference = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    return file, reference


@pytest.fixture(scope="module")
def ours(upstream):
    return fid_inception(upstream[0], verify_hash=False)  # random weights: not the published digest


def deep_atol(expected: torch.Tensor) -> float:
    """Round-off allowed between two float32 runs of the same deep network on the same batch: a few
    dozen ulps of the largest output (kernels differ by CPU and thread count), never below 1e-5."""
    return max(1e-5, 32 * torch.finfo(torch.float32).eps * expected.abs().max().item())


def images(seed: int, batch: int, size=(37, 45)) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_fid_inception_found_in_torch_hub_matches_pytorch_fid(upstream, places, monkeypatch):
    file, reference = upstream
    hub_file = places["hub"] / FID_FILE
    hub_file.symlink_to(file)
    pin(monkeypatch, "inception-fid", file)
    net = fid_inception()  # resolved through the torch hub cache, digest verified, weights_only load
    assert isinstance(net, FIDInceptionV3) and net.num_features == 2048 and not net.training
    u8 = images(0, 2)
    expected = reference(u8.float() / 255)[0].flatten(1)  # pytorch-fid's input: ToTensor's [0, 1]
    got = net(u8)
    assert got.shape == (2, 2048) and got.std() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=deep_atol(expected))
    x = u8.float() / 127.5 - 1  # the same images as the library's [-1, 1] floats: the same network input
    torch.testing.assert_close(net.preprocess(x), net.preprocess(u8), rtol=0, atol=1e-6)
    net.train()
    assert not net.training  # batch norm never leaves inference mode


@torch.no_grad()
def test_torch_fidelity_file_and_protocol_match_torch_fidelity(upstream, ours, places):
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    file, _ = upstream
    (places["gen"] / FIDELITY_FILE).symlink_to(file)  # only torch-fidelity's copy present: found and loaded
    net = fid_inception(verify_hash=False, protocol="torch-fidelity")
    torch.testing.assert_close(net.net.fc.weight, ours.net.fc.weight)
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased", "logits"],
                                            feature_extractor_weights_path=str(file))  # our own file: trusted
    u8 = images(1, 1)
    pool, logits_unbiased, logits = reference(u8)
    got = net.features(u8)
    torch.testing.assert_close(got["pool"], pool, rtol=1e-5, atol=deep_atol(pool))
    torch.testing.assert_close(got["logits_unbiased"], logits_unbiased, rtol=1e-5,
                               atol=max(1e-4, deep_atol(logits_unbiased)))
    torch.testing.assert_close(got["logits"], logits, rtol=1e-5, atol=max(1e-4, deep_atol(logits)))


@torch.no_grad()
def test_torchmetrics_protocol_matches_torchmetrics_extractor(upstream, ours):
    pytest.importorskip("torch_fidelity")  # torchmetrics' FID extractor is torch-fidelity's
    from torchmetrics.image.fid import NoTrainInceptionV3

    reference = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(upstream[0]))
    u8 = images(2, 1, size=(320, 300))  # downsampling: where the antialiased resize differs
    ours.protocol = "torchmetrics"
    try:
        expected = reference(u8)
        torch.testing.assert_close(ours(u8), expected, rtol=1e-5, atol=deep_atol(expected))
        tm_input = ours.preprocess(u8)
    finally:
        ours.protocol = "pytorch-fid"
    assert (ours.preprocess(u8) - tm_input).abs().max() > 1e-2  # the protocols' inputs do differ
