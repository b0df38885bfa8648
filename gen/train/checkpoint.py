"""Training checkpoints: everything needed to continue a run exactly, written atomically.

    RUN/checkpoints/step-000500/
        model.safetensors      the trained module (text encoder + denoiser)
        ema.safetensors        its exponential moving average
        optimizer.pt           AdamW state (tensors and numbers; read with weights_only=True)
        state.json             step, EMA updates, LR-scheduler state, config
    RUN/checkpoints/latest     the name of the newest complete checkpoint

A checkpoint is assembled in a hidden folder and renamed into place; `latest` is
replaced atomically after it, so a crash at any moment leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gen.errors import GenError


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def latest_checkpoint(run: Path) -> Path | None:
    pointer = checkpoint_dir(run) / "latest"
    if not pointer.is_file():
        return None
    path = checkpoint_dir(run) / pointer.read_text().strip()
    return path if path.is_dir() else None


def save_checkpoint(run: Path, step: int, model, ema, optimizer, lr_scheduler, config: dict, keep: int = 2,
                    scaler=None) -> Path:
    root = checkpoint_dir(run)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = root / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, tmp / "model.safetensors")
    save_file({k: v.detach().contiguous().cpu() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    meta = {"step": step, "ema_updates": ema.updates, "lr_scheduler": lr_scheduler.state_dict(), "config": config}
    if scaler is not None and scaler.is_enabled():  # fp16 training: the loss scale and its growth tracker
        meta["grad_scaler"] = {k: float(v) if isinstance(v, float) else v for k, v in scaler.state_dict().items()}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    pointer_tmp = root / ".latest.partial"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, root / "latest")
    # Keep the newest `keep` checkpoints this run wrote.
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, model, ema, optimizer, lr_scheduler, scaler=None) -> int:
    """Restore a checkpoint in place; returns the step it was taken at."""
    try:
        meta = json.loads((path / "state.json").read_text())
        model.load_state_dict(load_file(path / "model.safetensors"))
        ema.load_state_dict(load_file(path / "ema.safetensors"), meta["ema_updates"])
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        lr_scheduler.load_state_dict(meta["lr_scheduler"])
        if scaler is not None and scaler.is_enabled() and "grad_scaler" in meta:
            scaler.load_state_dict(meta["grad_scaler"])
    except Exception as err:  # a damaged file of the checkpoint: any failure to restore it
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise GenError(f"cannot resume from {path}: it is damaged ({type(err).__name__}: {detail}); delete it to "
                       "resume from the checkpoint before, if there is one") from None
    return meta["step"]
