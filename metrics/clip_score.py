"""CLIPScore from image and text embeddings: how well each picture matches its caption.

    from metrics.clip_score import clip_score
    result = clip_score(image_embeds, text_embeds)                          # (N, D) each, row i = pair i
    result.score, result.reduction, result.cosine                           # float, "torchmetrics", (N,)
    clip_score(image_embeds, text_embeds, reduction="hessel2021").score

The per-pair quantity is the cosine c_i = <e_I, e_T> / (|e_I| |e_T|) between the CLIP image
embedding of sample i and the text embedding of its caption, in float64. Two published
reductions turn them into one number, and they differ, so the result records which one:

    "torchmetrics"  max(100 * mean_i c_i, 0)        torchmetrics' CLIPScore: the clamp at 0
                                                    applies to the mean, not to each pair
                                                    (its docstring writes max(100 cos, 0)).
    "hessel2021"    mean_i 2.5 * max(c_i, 0)        Hessel et al. 2021, "CLIPScore", eq. 1
                                                    (w = 2.5), clamped per pair.

They agree up to the factor 40 whenever no cosine is negative (the usual case for real CLIP
embeddings, whose image-text cosines sit around 0.2 to 0.35).

The embeddings come from an open_clip model (`load_open_clip`), weights read from disk only:

    clip = load_open_clip("ViT-B-32")          # registry entry clip-vit-b-32 (metrics.weights), OpenAI's
    clip = load_open_clip("path/to/folder")    # open_clip's hub layout: open_clip_config.json + weights
    e_i = clip.image_embeds(torch.stack([clip.preprocess(pil) for pil in images]))   # (N, E)
    e_t = clip.text_embeds(captions)                                                 # (N, E)

Images go through open_clip's own eval transform for the model (the one
`open_clip.create_model_and_transforms` returns: shortest side resized to the input size with
bicubic filtering, centre crop, the model's mean and std), prompts through its BPE tokenizer
(cut at the context length, 77 for CLIP, keeping the end token, as torchmetrics does).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metrics.stats import as_float64_features

REDUCTIONS = ("torchmetrics", "hessel2021")
HESSEL_W = 2.5  # Hessel et al. 2021 rescale cosines by w = 2.5


@dataclass(frozen=True)
class CLIPScoreResult:
    score: float  # the reduced score
    reduction: str  # which reduction produced it (one of REDUCTIONS)
    cosine: torch.Tensor  # (N,) float64 per-pair cosines, before any clamp or scale
    n: int  # number of pairs


def pairwise_cosine(a, b, names: tuple[str, str] = ("a", "b")) -> torch.Tensor:
    """Cosine between row i of `a` and row i of `b`, both (N, D): (N,) float64. Zero rows are an error."""
    a = as_float64_features(a, name=names[0])
    b = as_float64_features(b, a.device, name=names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must be paired row by row with the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    for name, x in zip(names, (a, b)):
        norm = x.norm(dim=1)
        if (norm == 0).any():
            raise ValueError(f"{name} has all-zero rows {(norm == 0).nonzero().flatten()[:5].tolist()}: "
                             "their cosine is undefined")
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def clip_score(image_embeds, text_embeds, reduction: str = "torchmetrics") -> CLIPScoreResult:
    """CLIPScore of N (image, caption) pairs from their embeddings (N, D) each (see module doc)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    cos = pairwise_cosine(image_embeds, text_embeds, ("image_embeds", "text_embeds"))
    if cos.numel() == 0:
        raise ValueError("clip_score got no pairs")
    if reduction == "torchmetrics":
        score = (100 * cos.mean()).clamp_min(0)
    else:
        score = (HESSEL_W * cos.clamp_min(0)).mean()
    return CLIPScoreResult(score=score.item(), reduction=reduction, cosine=cos.cpu(), n=cos.numel())


# ---------------------------------------------------------------------------- the CLIP model

FOLDER_CONFIG = "open_clip_config.json"  # open_clip's hub layout: {"model_cfg": ..., "preprocess_cfg": ...}
FOLDER_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # the names open_clip saves


@dataclass
class CLIPEmbedder:
    """An open_clip CLIP model, frozen and in eval mode, with its eval transform and tokenizer.

    preprocess: a PIL image -> (3, S, S) float32, open_clip's eval transform for this model.
    tokenizer: list of N prompts -> (N, context_length) BPE ids (cut at the context length).
    name: the open_clip model name or folder; weights: the file the weights came from.
    """

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    name: str
    weights: Path
    preprocess_cfg: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        return self.tokenizer.context_length

    @torch.no_grad()
    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, E) image embeddings (not normalised)."""
        return self.model.encode_image(pixels.to(self.device)).float()

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        """N prompts -> (N, E) text embeddings (not normalised)."""
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()

    def too_long(self, texts: list[str]) -> list[int]:
        """Indices of prompts whose tokens (with the start and end tokens) exceed the context: they are cut."""
        return [i for i, t in enumerate(texts) if len(self.tokenizer.encode(t)) + 2 > self.context_length]

    @property
    def protocol(self) -> str:
        """open_clip's eval transform for this model, in words (what `gen score clip` reports)."""
        c = self.preprocess_cfg
        h, w = (c["size"], c["size"]) if isinstance(c["size"], int) else c["size"]
        resize = {"shortest": f"shorter side resized to {min(h, w)}, centre-cropped to {w}x{h}",
                  "longest": f"longer side resized to {max(h, w)}, padded to {w}x{h}",
                  "squash": f"resized to {w}x{h}"}[c["resize_mode"]]
        return (f"open_clip {self.name} eval transform: {resize} ({c['interpolation']}), mean {tuple(c['mean'])} "
                f"std {tuple(c['std'])}")


def _folder_config(folder: Path) -> tuple[dict, dict]:
    """(model_cfg, preprocess overrides) from an open_clip hub-layout folder."""
    file = folder / FOLDER_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{folder} has no {FOLDER_CONFIG}; a CLIP model folder is open_clip's hub layout "
                                f"({FOLDER_CONFIG} with a model_cfg, and {FOLDER_WEIGHTS[0]})")
    config = json.loads(file.read_text(encoding="utf-8"))
    if "model_cfg" not in config:
        raise ValueError(f"{file} has no 'model_cfg'; it must be open_clip's open_clip_config.json")
    return config["model_cfg"], config.get("preprocess_cfg", {})


def load_open_clip(model: str = "ViT-B-32", weights: str | os.PathLike | None = None,
                   device: torch.device | str = "cpu", verify_hash: bool | None = None) -> CLIPEmbedder:
    """An open_clip CLIP for CLIPScore, its weights read from disk only (safetensors, or a state dict
    read with torch.load(weights_only=True); TorchScript files are refused).

    `model`: an open_clip model name with a registry entry (`metrics.weights.for_open_clip`; "ViT-B-32"
    is OpenAI's ViT-B/32, as in torchmetrics' default), whose file `metrics.weights.resolve` finds;
    or a folder in open_clip's hub layout (open_clip_config.json + open_clip_model.safetensors).
    `weights`: a file (or folder) to use instead; any open_clip name is accepted with it.
    `verify_hash`: None checks registry files found in caches and trusts a `weights` the caller names.
    Raises WeightsNotFoundError (from the registry) or ValueError / FileNotFoundError naming the fix.
    """
    import open_clip
    from open_clip.model import CLIP
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    from metrics.weights import for_open_clip, load_state_dict, resolve

    verify = weights is None if verify_hash is None else verify_hash
    folder = Path(model).expanduser()
    if folder.is_dir():
        model_cfg, overrides = _folder_config(folder)
        if weights is None:
            found = [folder / n for n in FOLDER_WEIGHTS if (folder / n).is_file()]
            if not found:
                raise FileNotFoundError(f"{folder} holds no weights ({' or '.join(FOLDER_WEIGHTS)}); put them "
                                        f"there or pass the weights file")
            path = found[0]
        else:
            path = Path(weights).expanduser()
        name = str(folder)
    else:
        model_cfg = open_clip.get_model_config(model)
        if model_cfg is None:
            raise ValueError(f"unknown CLIP model {model!r}: give an open_clip model name (e.g. ViT-B-32) or a "
                             f"folder holding {FOLDER_CONFIG} and its weights")
        entry = for_open_clip(model)
        if entry is None and weights is None:
            raise FileNotFoundError(f"no registered weights for the open_clip model {model!r} (registered: "
                                    f"ViT-B-32); pass the weights file, or a folder in open_clip's hub layout")
        overrides = {}
        if entry is not None:  # the registered tag decides the activation and the preprocessing
            tag = open_clip.get_pretrained_cfg(*entry.open_clip)
            overrides = {k: v for k, v in tag.items() if k != "quick_gelu"}
            model_cfg["quick_gelu"] = bool(tag.get("quick_gelu", model_cfg.get("quick_gelu", False)))
            path = resolve(entry.name, path=weights, verify_hash=verify)
        else:
            path = Path(weights).expanduser()
        name = model
    if path.is_dir():
        path = next((path / n for n in FOLDER_WEIGHTS if (path / n).is_file()), path)
    if not path.is_file():
        raise FileNotFoundError(f"no CLIP weights file at {path}; pass the file (e.g. {FOLDER_WEIGHTS[0]})")
    model_cfg = copy.deepcopy(model_cfg)
    text_cfg, vision_cfg = model_cfg.get("text_cfg", {}), model_cfg.get("vision_cfg", {})
    if (model_cfg.pop("custom_text", False) or text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")
            or vision_cfg.get("timm_model_name") or "multimodal_cfg" in model_cfg):
        raise ValueError(f"CLIP model {name}: only open_clip's own towers with its bundled BPE tokenizer are "
                         f"supported here (Hugging Face text models and timm towers would need downloads)")

    net = CLIP(**model_cfg)
    state = load_state_dict(path)
    own = net.state_dict()
    if "logit_scale" in state and state["logit_scale"].shape != own["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path} does not hold the weights of CLIP model {name}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}, shape mismatches {wrong[:4]}")
    net.load_state_dict(state)
    net = net.to(device).eval().requires_grad_(False)

    cfg = merge_preprocess_dict(PreprocessCfg(), overrides)
    cfg["size"] = net.visual.image_size
    preprocess = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", 77),
                                          **text_cfg.get("tokenizer_kwargs", {}))
    return CLIPEmbedder(net, preprocess, tokenizer, name, path, cfg)


__all__ = ["CLIPScoreResult", "REDUCTIONS", "clip_score", "pairwise_cosine", "CLIPEmbedder", "load_open_clip"]
