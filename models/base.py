"""Configured modules: a dataclass config that round-trips through JSON, and a folder
on disk (`config.json` + `model.safetensors`) that rebuilds the module exactly.

    net.save_pretrained("ckpt/")            # config.json + model.safetensors
    net = models.load_pretrained("ckpt/")   # the class is named in config.json

Weights are only ever read with safetensors: nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

MODEL_CLASSES: dict[str, type["ConfiguredModule"]] = {}


def register(cls):
    """Class decorator: make `cls` loadable by name from a config.json."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def config_to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(config_class, data: dict):
    """Build a config dataclass from JSON data; unknown keys are an error, tuples restored."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{config_class.__name__} has no field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        default = fields[name].default
        if isinstance(value, list) and (isinstance(default, tuple) or "tuple" in str(fields[name].type)):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[name] = value
    return config_class(**values)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ConfiguredModule(nn.Module):
    """An nn.Module built from one dataclass config (constructor kwargs = JSON config)."""

    config_class: ClassVar[type]

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @classmethod
    def from_config(cls, config: dict | Any, **overrides):
        if isinstance(config, dict):
            config = config_from_dict(cls.config_class, {**config, **overrides})
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        return cls(config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = False,
                        dtype: torch.dtype | None = None) -> Path:
        """Write `config.json` and `model.safetensors` into folder `path`.

        An existing checkpoint there is replaced only with `overwrite=True`; each file is
        written to a temporary name and renamed, so a crash never leaves a torn file.
        `dtype` (e.g. torch.float16) stores floating-point weights at that precision;
        loading casts them back to the module's dtype.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if not overwrite and ((path / CONFIG_NAME).exists() or (path / WEIGHTS_NAME).exists()):
            raise FileExistsError(f"{path} already holds a checkpoint; pass overwrite=True to replace it")
        state = {k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype)
                 .contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"class": type(self).__name__}
        _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=meta))
        config = {"_class": type(self).__name__, **config_to_dict(self.config)}
        _atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **overrides):
        model = load_pretrained(path, device=device, **overrides)
        if not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: not a checkpoint folder")
    return json.loads(file.read_text())


def load_pretrained(path: str | os.PathLike, device: str | torch.device = "cpu", **overrides):
    """Rebuild the module saved in folder `path` (its class is named in config.json)."""
    from safetensors.torch import load_file

    config = read_config(path)
    name = config.pop("_class", None)
    if name not in MODEL_CLASSES:
        raise ValueError(f"{path}: config.json names class {name!r}; known: {', '.join(sorted(MODEL_CLASSES))}")
    model = MODEL_CLASSES[name].from_config(config, **overrides)
    state = load_file(str(Path(path) / WEIGHTS_NAME), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the config (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    return model.to(device)
