"""The pretrained files the standard metrics need, and where to find them on this machine.

    from metrics.weights import REGISTRY, resolve, load_state_dict
    path = resolve("inception-fid")                # Path, SHA-256 checked; never downloads by default
    state = load_state_dict(path)                  # tensors only: safetensors or torch.load(weights_only=True)

`REGISTRY` is the one table of weight files: for each, the file name its upstream library
saves it under (so caches that pytorch-fid, torch-fidelity, torchmetrics, torchvision or
open_clip already filled are found), its SHA-256 where known, its size, where to download it,
and what reads it. `resolve(name)` looks, in this order, at

  1. `path=` (a file, or a folder holding the file),
  2. `$GEN_WEIGHTS/<file>` and `$GEN_WEIGHTS/<name>/<file>`,
  3. the torch hub cache, `$TORCH_HOME/hub/checkpoints/<file>` (and `.../<name>/<file>`),
  4. the Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, ~/.cache/huggingface/hub),
     for files hosted there,
  5. other places an upstream library keeps it (open_clip's ~/.cache/clip, files shipped
     inside the torchmetrics and lpips wheels).

The first file found is checked against the recorded SHA-256 (a mismatch is an error naming
both digests, not a reason to look further). A `path=` is checked too unless the caller passes
`verify_hash=False`; `gen score` and `lpips_network(weights=...)` do so for a file the user names:
it is theirs, and may be a converted or features-only copy, while a file in a cache under the
upstream name claims to be the upstream bytes and is always checked. Nothing is downloaded unless
`allow_download=True`; then each URL is tried once, with a timeout and no retries, into
`$GEN_WEIGHTS` (else the torch hub cache). A file found nowhere is one `WeightsNotFoundError`
that names the file, its hash, its URLs, every place looked in, and how to put it there.

TorchScript archives (StyleGAN-V's I3D, OpenAI's CLIP .pt files) cannot be read without
running their serialized code, so `load_state_dict` refuses them: convert them once, on a
machine you trust, to a safetensors state dict (see `TORCHSCRIPT_HELP`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

ENV = "GEN_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 15.0  # per URL, one attempt each: fail fast when offline

TORCHSCRIPT_HELP = (
    "a TorchScript archive can only be read by running the code serialized in it "
    "(torch.jit.load), which this project never does with a downloaded file. Convert it once, on a "
    "machine and from a source you trust: `m = torch.jit.load(path); "
    "safetensors.torch.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, out)`, "
    "then load `out` into a native module with the same parameter names")


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained file.

    filename: the name the upstream library saves it under (its cache key).
    sha256: the full hex digest, or a prefix of at least 8 hex digits where only that is known
        (torch hub names files `<stem>-<sha256[:8]>.pth`); None where unknown (not verified).
    size: bytes, where known.
    urls: upstream download locations, tried in order when downloading is allowed.
    format: "state_dict" (torch.load(weights_only=True)), "safetensors", or "torchscript"
        (refused by `load_state_dict`; see TORCHSCRIPT_HELP).
    hf_repo, hf_filename: the Hugging Face hub copy, looked up in the local hub cache.
    also: other paths upstream libraries use: "~/..." or "pkg:<package>/<path inside it>".
    used_by: what reads it. open_clip: the (arch, tag) open_clip knows it by.
    """

    name: str
    filename: str
    sha256: str | None
    size: int | None
    urls: tuple[str, ...]
    format: str = "state_dict"
    hf_repo: str | None = None
    hf_filename: str | None = None
    also: tuple[str, ...] = ()
    used_by: str = ""
    open_clip: tuple[str, str] | None = None
    note: str = ""


_FID_INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
_FID_INCEPTION_SIZE = 95_628_359

REGISTRY: dict[str, WeightSpec] = {s.name: s for s in [
    WeightSpec(
        name="inception-fid",
        filename="pt_inception-2015-12-05-6726825d.pth",
        sha256=_FID_INCEPTION_SHA256, size=_FID_INCEPTION_SIZE,
        urls=("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
              "pt_inception-2015-12-05-6726825d.pth",),
        used_by="metrics.backbones.fid_inception; pytorch_fid.inception.fid_inception_v3",
        note="TF inception-2015-12-05 graph ported by pytorch-fid: torchvision Inception3 keys, "
             "1008 classes, no aux head. The digest and size are as published by several users of "
             "the file (its first 8 hex digits are the file name's); not checked here (no network)."),
    WeightSpec(
        name="inception-fid-torch-fidelity",
        filename="weights-inception-2015-12-05-6726825d.pth",
        sha256=_FID_INCEPTION_SHA256, size=_FID_INCEPTION_SIZE,
        urls=("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
              "weights-inception-2015-12-05-6726825d.pth",),
        used_by="metrics.backbones.fid_inception; torch_fidelity / torchmetrics FID, KID, IS",
        note="The same Inception for torch-fidelity and torchmetrics, same keys; published digests "
             "equal pytorch-fid's file, i.e. the same bytes under another name. Not checked here."),
    WeightSpec(
        name="i3d-fvd",
        filename="i3d_torchscript.pt",
        sha256=None, size=None,
        urls=("https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",),
        format="torchscript",
        used_by="FVD, StyleGAN-V protocol (src/metrics/frechet_video_distance.py: rescale=True, "
                "resize=True, return_features=True: 400-d pre-softmax features); natively metrics.i3d.load_i3d",
        note="TorchScript port of the tf.hub Kinetics-400 I3D used by the original FVD code. "
             "SHA-256 and size unknown here (no published digest found); stylegan-v's dnnlib caches "
             "it as ~/.cache/dnnlib/downloads/<md5(url)>_i3d_torchscript.pt. Refused by "
             "load_state_dict: `python scripts/convert_i3d.py` converts it once (checking outputs) into "
             "i3d_torchscript.safetensors next to it, which metrics.i3d.load_i3d finds in the places "
             "listed here."),
    WeightSpec(
        name="clip-vit-b-32",
        filename="open_clip_model.safetensors",
        sha256=None, size=None,
        urls=("https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/"
              "open_clip_model.safetensors",),
        format="safetensors",
        hf_repo="timm/vit_base_patch32_clip_224.openai", hf_filename="open_clip_model.safetensors",
        used_by="CLIPScore; open_clip.create_model('ViT-B-32', pretrained='openai') (or "
                "models.text.find_open_clip_weights) reads it from the same cache",
        open_clip=("ViT-B-32", "openai"),
        note="OpenAI's weights as open_clip's hf-hub safetensors copy; digest unknown here. OpenAI's own "
             "ViT-B-32.pt (SHA-256 40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af, "
             "in its URL) is TorchScript and is not used."),
    WeightSpec(
        name="alexnet",
        filename="alexnet-owt-7be5be79.pth",
        sha256="7be5be79", size=None,
        urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
        used_by="LPIPS backbone: metrics.reconstruction.lpips_network (torchvision AlexNet_Weights.IMAGENET1K_V1)",
        note="Only the 8-digit SHA-256 prefix of the torch hub file name is known (about 233 MB)."),
    WeightSpec(
        name="vgg16",
        filename="vgg16-397923af.pth",
        sha256="397923af", size=None,
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        used_by="LPIPS backbone, net='vgg' (torchvision VGG16_Weights.IMAGENET1K_V1)",
        note="Only the 8-digit SHA-256 prefix of the torch hub file name is known (about 528 MB)."),
    WeightSpec(
        name="lpips-alex-heads",
        filename="alex.pth",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", size=6009,
        urls=("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",),
        also=("pkg:torchmetrics/functional/image/lpips_models/alex.pth", "pkg:lpips/weights/v0.1/alex.pth"),
        used_by="LPIPS v0.1 linear heads for AlexNet; torchmetrics loads its packaged copy itself",
        note="Ships inside the torchmetrics and lpips wheels (identical bytes; digest measured on the "
             "installed torchmetrics 1.9 and lpips 0.1.4)."),
    WeightSpec(
        name="lpips-vgg-heads",
        filename="vgg.pth",
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", size=7289,
        urls=("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",),
        also=("pkg:torchmetrics/functional/image/lpips_models/vgg.pth", "pkg:lpips/weights/v0.1/vgg.pth"),
        used_by="LPIPS v0.1 linear heads for VGG16; torchmetrics loads its packaged copy itself",
        note="Ships inside the torchmetrics and lpips wheels (identical bytes, measured as above)."),
]}


class WeightsNotFoundError(FileNotFoundError):
    """A registered weight file is on none of the searched paths (and was not downloaded)."""


class WeightsHashError(ValueError):
    """A weight file's SHA-256 (or size) is not the recorded one."""


class WeightsFileError(ValueError):
    """A weights file that cannot be used as given: pickled objects (never unpickled), a
    TorchScript archive where a state dict is needed, or a damaged file."""


def spec(name: str) -> WeightSpec:
    """The registry entry for `name`, or a KeyError listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no weights named {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def for_open_clip(arch: str) -> WeightSpec | None:
    """The registry entry whose `open_clip` is (arch, tag), or None: which weights an open_clip
    model name stands for here (e.g. "ViT-B-32" -> clip-vit-b-32, OpenAI's, quick GELU)."""
    return next((s for s in REGISTRY.values() if s.open_clip and s.open_clip[0] == arch), None)


def torch_hub_checkpoints() -> Path:
    """torch's hub cache for downloaded weights: $TORCH_HOME/hub/checkpoints (read at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: hash each file once


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks; cached per (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def verify(s: WeightSpec, path: Path) -> Path:
    """`path` if its size and SHA-256 match `s` (checks what is recorded), else WeightsHashError."""
    size = path.stat().st_size
    if s.size is not None and size != s.size:
        raise WeightsHashError(f"{path} is {size:,} bytes, but {s.name} ({s.filename}) is {s.size:,} bytes: "
                               f"a truncated or different file. Delete it and fetch {s.urls[0]}")
    if s.sha256 is not None:
        actual = sha256_file(path)
        if not actual.startswith(s.sha256.lower()):
            kind = "SHA-256" if len(s.sha256) == 64 else f"SHA-256 prefix ({len(s.sha256)} hex digits)"
            raise WeightsHashError(f"{path} does not hold {s.name}: expected {kind} {s.sha256}, actual SHA-256 "
                                   f"{actual}. Delete or move it and fetch {s.urls[0]} (or pass verify_hash=False to "
                                   f"use it anyway)")
    return path


def _package_file(ref: str) -> Path | None:
    """'pkg:torchmetrics/a/b.pth' -> the file inside the installed package (not imported), or None."""
    from importlib.util import find_spec

    package, _, inner = ref[4:].partition("/")
    try:
        found = find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / inner


def candidates(s: WeightSpec) -> list[tuple[str, Path | None]]:
    """Every place `resolve` looks, in order, as (where, path); path is None where there is
    nothing to look at (an unset variable, a repo missing from the Hugging Face cache)."""
    places: list[tuple[str, Path | None]] = []
    root = os.environ.get(ENV)
    if root:
        places += [(f"${ENV}", Path(root).expanduser() / s.filename),
                   (f"${ENV}", Path(root).expanduser() / s.name / s.filename)]
    else:
        places.append((f"${ENV} (unset)", None))
    hub = torch_hub_checkpoints()
    places += [("torch hub cache", hub / s.filename), ("torch hub cache", hub / s.name / s.filename)]
    if s.hf_repo:
        from huggingface_hub import try_to_load_from_cache  # a local lookup: no network

        hit = try_to_load_from_cache(s.hf_repo, s.hf_filename, cache_dir=hf_hub_cache())
        places.append((f"Hugging Face hub cache {hf_hub_cache()} ({s.hf_repo}: {s.hf_filename})",
                       Path(hit) if isinstance(hit, str) else None))
    for ref in s.also:
        if ref.startswith("pkg:"):
            places.append((f"the installed {ref[4:].partition('/')[0]} package", _package_file(ref)))
        else:
            places.append(("upstream cache", Path(ref).expanduser()))
    return places


def resolve(name: str, path: str | os.PathLike | None = None, allow_download: bool = False,
            verify_hash: bool = True) -> Path:
    """The local file of weights `name` (see the module docstring for the lookup order).

    `path`: a file, or a folder holding `REGISTRY[name].filename`; when given it must exist.
    `verify_hash`: check the recorded size and SHA-256 (WeightsHashError on mismatch).
    `allow_download`: fetch a missing file from its URLs (one attempt each, no retries).
    Raises WeightsNotFoundError naming the file, its hash, its URLs and every place looked in.
    """
    s = spec(name)
    check = (lambda p: verify(s, p)) if verify_hash else (lambda p: p)
    if path is not None:
        given = Path(path).expanduser()
        file = given / s.filename if given.is_dir() else given
        if not file.is_file():
            raise WeightsNotFoundError(f"{name}: no file at {file} (given as path=); expected {s.filename}"
                                       + _how_to_place(s))
        return check(file)
    places = candidates(s)
    for _, file in places:
        if file is not None and file.is_file():
            return check(file)
    if allow_download:
        return _download(s, places)
    raise WeightsNotFoundError(_not_found(s, places, "downloads are off (allow_download=False)"))


def _not_found(s: WeightSpec, places, why: str) -> str:
    digest = f"SHA-256 {s.sha256}" if s.sha256 else "SHA-256 unknown"
    size = f", {s.size:,} bytes" if s.size else ""
    looked = "\n".join(f"  - {d}: {p}" if p is not None else f"  - {d}" for d, p in places)
    return (f"weights {s.name!r} not found: {s.filename} ({digest}{size}); {why}.\nLooked in:\n{looked}"
            + _how_to_place(s))


def _how_to_place(s: WeightSpec) -> str:
    target = Path(os.environ[ENV]) if os.environ.get(ENV) else torch_hub_checkpoints()
    urls = " or ".join(s.urls)
    fix = (f"\nTo fix: on a machine with network, download {urls}, then copy it to {target / s.filename} "
           f"(or point ${ENV} at the folder holding it, or pass its path)")
    if s.hf_repo:
        fix += f"; or `huggingface-cli download {s.hf_repo} {s.hf_filename}` into the Hugging Face cache"
    if s.format == "torchscript":
        fix += f". Note: it is TorchScript; {TORCHSCRIPT_HELP}"
    return fix


def _download(s: WeightSpec, places) -> Path:
    """Fetch `s` from each URL once (timeout DOWNLOAD_TIMEOUT_S, no retries) into $GEN_WEIGHTS or the torch
    hub cache, checking the digest before the file takes its final name."""
    folder = Path(os.environ[ENV]).expanduser() if os.environ.get(ENV) else torch_hub_checkpoints()
    dest = folder / s.name / s.filename if s.hf_repo else folder / s.filename  # generic HF names get a subfolder
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in s.urls:
        tmp = None
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, tempfile.NamedTemporaryFile(
                    dir=dest.parent, prefix=dest.name + ".", suffix=".part", delete=False) as out:
                tmp = Path(out.name)
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            verify(s, tmp)
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
            errors.append(f"{url}: {e}")
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()
    raise WeightsNotFoundError(_not_found(s, places, "download failed (one attempt per URL): " + "; ".join(errors)))


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether `path` is a TorchScript archive: a zip holding `constants.pkl` (what torch.load checks)."""

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in archive.namelist())


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a .safetensors file or a torch.save'd dict, read with
    `torch.load(weights_only=True)`: no Python object is unpickled and no code runs. TorchScript
    archives and pickled modules are refused with what to do instead."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError: a truncated or foreign file
            raise WeightsFileError(f"{path} is not a readable .safetensors file ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if is_torchscript(path):
        raise WeightsFileError(f"{path} is a TorchScript archive, not a state dict: {TORCHSCRIPT_HELP}")
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol says nothing about safety
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as e:
        raise WeightsFileError(f"{path} cannot be read as a tensor state dict: {str(e).splitlines()[0]}") from None
    except Exception as e:  # pickle.UnpicklingError: a pickled module/object; also corrupt files
        raise WeightsFileError(f"{path} holds pickled Python objects (e.g. a whole torch.save'd module), which are "
                               f"never unpickled here; save its `state_dict()` (tensors only) or a .safetensors file "
                               f"instead ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise WeightsFileError(f"{path} does not hold a flat state dict {{name: tensor}} (got {type(state).__name__})")
    return state


__all__ = ["WeightSpec", "REGISTRY", "WeightsNotFoundError", "WeightsHashError", "WeightsFileError", "spec",
           "for_open_clip", "resolve", "verify", "candidates", "load_state_dict", "is_torchscript", "sha256_file", "torch_hub_checkpoints",
           "hf_hub_cache", "ENV", "TORCHSCRIPT_HELP"]
