"""The models shipped inside the package (gen/weights) and how names resolve to folders."""

from __future__ import annotations

from pathlib import Path

from gen.errors import GenError
from gen.pipeline.folder import INDEX, read_index

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


DEFAULT_VAE, DEFAULT_VIDEO_VAE = "toy-vae", "toy-video-vae"


def resolve_vae(model: str, video: bool = False) -> Path:
    """The VAE checkpoint folder `model` names: "default" (the shipped one), a shipped name, a
    folder (config.json + model.safetensors), or a pipeline folder's vae part."""
    if model == "default":
        name = DEFAULT_VIDEO_VAE if video else DEFAULT_VAE
        path = WEIGHTS_DIR / name
        if not (path / "config.json").is_file():
            raise GenError(f"the shipped {'video ' if video else ''}VAE {path} is not installed; pass --model PATH "
                           f"to a VAE checkpoint folder (config.json + model.safetensors)")
        return path
    for path in (Path(model), WEIGHTS_DIR / model):
        if (path / INDEX).is_file():  # a pipeline folder: its vae part
            part = read_index(path).get("vae")
            if not part:
                raise GenError(f"--model {model}: the pipeline in {path} has no VAE (a pixel-space model)")
            return path / part
        if (path / "config.json").is_file():
            return path
    shipped = sorted(p.name for p in WEIGHTS_DIR.glob("*") if "vae" in p.name and (p / "config.json").is_file())
    raise GenError(f"unknown VAE {model!r}: not a shipped VAE ({', '.join(shipped) or 'none shipped yet'}) "
                   f"and not a folder holding config.json + model.safetensors")


DEFAULT_FILES = {"image": "DEFAULT", "video": "DEFAULT_VIDEO", "sr": "DEFAULT_SR"}  # the shipped default, per kind


def shipped_models(kind: str = "image") -> dict[str, Path]:
    """Name -> folder of every pipeline shipped inside the package, plus "default": the
    shipped default of that `kind` (image, video or sr), where one is shipped."""
    found = {p.name: p for p in sorted(WEIGHTS_DIR.glob("*")) if (p / INDEX).is_file()}
    alias = WEIGHTS_DIR / DEFAULT_FILES[kind]
    if alias.is_file() and alias.read_text().strip() in found:
        found["default"] = found[alias.read_text().strip()]
    return found


def is_local_model(name: str, kind: str = "image") -> bool:
    """A shipped name or a path on this machine (loading it contacts no network)."""
    return name in shipped_models(kind) or Path(name).exists()


def unknown_model(name: str, shipped: dict, hub: bool = False) -> str:
    """The error for a --model that names nothing here, with the closest local names."""
    import difflib

    path = Path(name)
    if path.exists():
        return f"--model {name} is not a model folder (no {INDEX} in it)"
    near = difflib.get_close_matches(name, list(shipped), n=1)
    parent = path.parent if str(path.parent) not in ("", ".") else Path(".")
    if parent.is_dir():
        siblings = [str(parent / p.name) if str(path.parent) not in ("", ".") else p.name
                    for p in parent.iterdir() if p.is_dir()]
        near += difflib.get_close_matches(name, siblings, n=1)
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    text = (f"unknown model {name!r}: no such folder here{hint}, and not a shipped name "
            f"({', '.join(sorted(shipped)) or 'none yet'})")
    if hub:
        text += (f"; as a Hugging Face hub id it is not in the local cache: pass --download (Python: "
                 f"local_files_only=False) to fetch it, or run `hf download {name}` where there is network and "
                 f"pass the folder")
    return text


