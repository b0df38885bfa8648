"""The pipeline folder format: `model_index.json` names the parts (one checkpoint folder
each), the schedule and the sampling defaults, in the spirit of diffusers'; a part may be
stored as its difference from a shipped base pipeline's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from gen.errors import GenError, read_json

INDEX = "model_index.json"
FORMAT = 1  # the folder format gen writes (model_index.json "format"); folders without one are format 1


def base_digest(base: Path) -> str:
    """sha256 of a base pipeline's weights (every model.safetensors under it, in path order):
    a folder stored as its difference from that base records it, and refuses another base."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(base.rglob("model.safetensors")):
        digest.update(str(file.relative_to(base)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_base(path: Path, index: dict, base: Path) -> None:
    """Refuse a difference folder whose shipped base has changed since it was saved."""
    recorded = index.get("base_sha256")
    if recorded is not None and recorded != base_digest(base):
        raise GenError(f"{path} was saved as its difference from the shipped {index['base']!r}, whose weights have "
                       f"changed since (sha256 differs): it cannot be rebuilt; re-export it from its training run")


def stage_source(path: Path, entry, need: str) -> str:
    """Where a cascade folder's stage `entry` lives: a subfolder of `path`, or {"shipped": NAME},
    a pipeline shipped with gen (so a shipped cascade copies no weights). `need` says what
    the entry should be, for the error a damaged one gets."""
    from gen.pipeline.weights import shipped_models

    if isinstance(entry, dict) and set(entry) == {"shipped"}:
        if entry["shipped"] not in shipped_models():
            raise GenError(f"{path / INDEX} names the shipped pipeline {entry['shipped']!r}, which is not installed")
        return entry["shipped"]
    if isinstance(entry, str) and entry and not Path(entry).is_absolute() and ".." not in Path(entry).parts:
        return str(path / entry)
    raise GenError(f"{path / INDEX}: {need}; got {entry!r}")


def read_index(path: Path) -> dict:
    """A pipeline folder's model_index.json, checked to be a table with the parts it names."""
    index = read_json(path / INDEX, fix="rewrite it with save_pretrained, or restore the folder")
    if not isinstance(index, dict):
        raise GenError(f"{path / INDEX} is not a JSON object; the pipeline folder is damaged")
    if not isinstance(index.get("format", FORMAT), int) or index.get("format", FORMAT) > FORMAT:
        raise GenError(f"{path / INDEX}: folder format {index.get('format')!r}; this gen reads format {FORMAT} "
                       f"and older: upgrade gen")
    if index.get("_class") in ("Cascade", "VideoCascade"):  # its stages are pipeline folders, checked by its
        # from_folder
        return index
    if "_class_name" not in index:  # gen's own: it must name its parts and its schedule
        for key in ("denoiser", "schedule"):
            if key not in index:
                raise GenError(f"{path / INDEX} has no {key!r} entry; the pipeline folder is damaged")
        if not isinstance(index.get("schedule"), dict) or not isinstance(index.get("defaults", {}), dict):
            raise GenError(f"{path / INDEX}: 'schedule' and 'defaults' must be JSON objects")
        for key in ("denoiser", "text_encoder", "vae"):
            if index.get(key) is not None and (not isinstance(index[key], str) or Path(index[key]).is_absolute()
                                               or ".." in Path(index[key]).parts):
                raise GenError(f"{path / INDEX}: {key} must name a subfolder of the pipeline, got {index[key]!r}")
    return index


def _floats(module, dtype) -> dict[str, torch.Tensor]:
    """A module's state at the precision it would be saved in."""
    return {k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).cpu()
            for k, v in module.state_dict().items()}


def _same_weights(a, b, dtype) -> bool:
    sa, sb = _floats(a, dtype), _floats(b, dtype)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _save_difference(module, base_module, folder: Path, dtype, rank: int | None = None) -> None:
    """config.json + model.safetensors holding only the tensors that differ from `base_module`'s.
    With `rank`, a matrix whose difference from the base's has at most that rank (a LoRA
    fine-tune's, merged) is stored as the two factors of that difference, NAME.delta_up
    (out, r) and NAME.delta_down (r, in), found by SVD; any other changed tensor is stored whole."""
    from safetensors.torch import save_file

    from models.base import CONFIG_NAME, WEIGHTS_NAME, _atomic_write, config_to_dict

    base = _floats(base_module, dtype)
    own = {}
    exact = module.state_dict()  # the change is factored at full precision, then stored at `dtype`
    for k, v in _floats(module, dtype).items():
        if k in base and base[k].shape == v.shape and torch.equal(base[k], v):
            continue
        factors = _low_rank(exact[k].detach().float().cpu() - base[k].float(), rank) \
            if rank and k in base and v.dim() == 2 else None
        if factors is None:
            own[k] = v.contiguous()
        else:
            own[k + DELTA_UP], own[k + DELTA_DOWN] = (f.to(v.dtype).contiguous() for f in factors)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class": type(module).__name__, **config_to_dict(module.config)}
    _atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    _atomic_write(folder / WEIGHTS_NAME,
                  lambda tmp: save_file(own, tmp, metadata={"class": type(module).__name__, "base": "yes"}))


DELTA_UP, DELTA_DOWN = ".delta_up", ".delta_down"


def _low_rank(delta: torch.Tensor, rank: int, tol: float = 1e-3):
    """(up, down) with up @ down == delta (to `tol` of its norm) and inner size `rank`, or None
    where delta has a higher rank or the factors would not be smaller than the matrix."""
    out, inp = delta.shape
    if rank * (out + inp) >= out * inp:
        return None
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if s[rank:].norm() > tol * max(s.norm().item(), 1e-30):
        return None
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def _load_difference(folder: Path, base_module, device):
    """Rebuild a module saved by `_save_difference`: the base's tensors, then its own."""
    import models
    from safetensors.torch import load_file

    config = models.read_config(folder)
    module = models.base.MODEL_CLASSES[config.pop("_class")].from_config(config)
    base = base_module.state_dict()
    state = {k: v for k, v in base.items() if k in module.state_dict()}
    own = load_file(str(folder / "model.safetensors"))
    for k, v in own.items():
        if k.endswith(DELTA_UP):  # a low-rank difference: base + up @ down
            name = k[:-len(DELTA_UP)]
            down = own.get(name + DELTA_DOWN)
            if name not in base or down is None:
                raise ValueError(f"{k} has no {name + DELTA_DOWN} or no base tensor {name}")
            state[name] = (base[name].float() + v.float() @ down.float()).to(base[name].dtype)
        elif not k.endswith(DELTA_DOWN):
            state[k] = v
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return module.to(device)




def write_folder(path, overwrite: bool, fill, marker: str = INDEX) -> Path:
    """Write a pipeline folder: `fill(tmp)` assembles it beside `path` (`.NAME.partial`), and it
    then replaces `path` whole, so a failure leaves `path` as it was. An existing non-empty
    `path` is replaced only with `overwrite`, and never when it lacks `marker` (the file that
    says gen wrote it: a pipeline's model_index.json, an adapter's adapter_config.json)."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise GenError(f"{path} exists and is not empty; choose a new folder or pass overwrite=True")
    if path.exists() and any(path.iterdir()) and not (path / marker).is_file():
        raise GenError(f"{path} is not a folder gen wrote (no {marker}); refusing to replace it")
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
