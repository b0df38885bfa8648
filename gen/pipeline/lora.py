"""LoRA adapters (Hu et al. 2022) for gen's denoisers, through `peft`.

    gen train image --init default --lora-rank 8 --out runs/mine     # writes runs/mine/lora/
    gen image "a cat in a hat" --lora runs/mine/lora

    from gen.pipeline.lora import load_lora
    pipe = load_lora(Pipeline.from_pretrained("default"), "runs/mine/lora")

An adapter folder is peft's own layout, so `peft.PeftModel.from_pretrained(denoiser, FOLDER)`
reads it too: `adapter_config.json` (peft's LoraConfig: rank, alpha, target modules) and
`adapter_model.safetensors` (only the low-rank A and B matrices), plus gen's `gen-lora.json`
naming the pipeline it was trained on. Only safetensors are read: a folder holding pickled
weights alone is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gen.errors import GenError, missing_package, reading

CONFIG, WEIGHTS, CARD = "adapter_config.json", "adapter_model.safetensors", "gen-lora.json"
# The attention projections and the MLP linears of gen's DiT and U-Net blocks (not the
# conditioning embedders): names ending to_qkv, to_q, to_kv, to_out, mlp.0/2 (DiT), ff.0/2 (U-Net).
TARGETS = r"^(?!conditioner\.).*\.(to_qkv|to_q|to_k|to_v|to_kv|to_out|mlp\.[02]|ff\.[02])$"
PREFIX = "base_model.model."  # how peft's PeftModel names the wrapped model's tensors on disk


def _peft():
    try:
        import peft
    except ImportError:
        raise missing_package("peft", "LoRA fine-tuning and --lora") from None
    return peft


def add_lora(denoiser: torch.nn.Module, rank: int, alpha: float | None = None) -> torch.nn.Module:
    """Inject rank-`rank` adapters (scale alpha / rank; alpha defaults to rank) into the
    denoiser's attention and MLP linears, in place; only they are left trainable. peft starts
    B at zero, so the adapted denoiser computes what it did before."""
    peft = _peft()
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise GenError(f"--lora-rank must be a positive integer, got {rank!r}")
    config = peft.LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=TARGETS)
    peft.inject_adapter_in_model(config, denoiser)
    for name, param in denoiser.named_parameters():
        param.requires_grad_(".lora_" in name)
    return denoiser


def lora_config(denoiser: torch.nn.Module):
    """The peft LoraConfig of an adapted denoiser."""
    for module in denoiser.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "r", {}):
            peft = _peft()
            return peft.LoraConfig(r=module.r["default"], lora_alpha=module.lora_alpha["default"],
                                   target_modules=TARGETS)
    raise GenError("this denoiser holds no LoRA adapter")


def save_lora(denoiser: torch.nn.Module, folder: Path, base: str) -> Path:
    """Write the adapter folder (peft's layout; the folder must not hold files already)."""
    from safetensors.torch import save_file

    peft = _peft()
    folder = Path(folder)
    state = peft.get_peft_model_state_dict(denoiser)
    folder.mkdir(parents=True, exist_ok=True)
    config = lora_config(denoiser)
    config.save_pretrained(str(folder))
    save_file({PREFIX + k: v.detach().float().contiguous().cpu() for k, v in state.items()}, str(folder / WEIGHTS),
              metadata={"format": "pt"})
    (folder / CARD).write_text(json.dumps({"base": base, "rank": config.r, "alpha": config.lora_alpha},
                                          indent=2) + "\n")
    return folder


def read_card(path) -> dict:
    """gen-lora.json of an adapter folder, after checking the folder is one."""
    folder = Path(path)
    if not folder.is_dir():
        raise GenError(f"--lora {path} is not a folder; give the lora/ folder a LoRA run wrote")
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        pickled = " (its adapter_model.bin is pickled; gen reads only safetensors)" \
            if (folder / "adapter_model.bin").exists() else ""
        raise GenError(f"--lora {path} is not a LoRA adapter folder: no {' or '.join(missing)}{pickled}")
    card = {}
    if (folder / CARD).is_file():
        with reading(folder / CARD, "--lora"):
            card = json.loads((folder / CARD).read_text())
    return card


def load_lora(pipe, path, merge: bool = True):
    """Apply the adapter folder `path` to a pipeline's denoiser (a cascade's base), in place;
    returns the pipeline. `merge` folds B A into the weights (peft's merge_and_unload: the
    same outputs, no extra cost per step); False keeps the adapter layers."""
    from gen.pipeline.cascade import Cascade

    peft = _peft()
    read_card(path)
    target = pipe.base if isinstance(pipe, Cascade) else pipe
    denoiser = target.denoiser
    try:
        adapted = peft.PeftModel.from_pretrained(denoiser, str(path), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GenError(f"--lora {path} does not fit {target.name or 'this model'}'s denoiser: {first}") from None
    target.denoiser = (adapted.merge_and_unload() if merge else adapted.base_model.model).eval()
    return pipe


__all__ = ["add_lora", "load_lora", "read_card", "save_lora"]
