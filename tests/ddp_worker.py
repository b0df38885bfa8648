"""DDP worker for tests/test_train.py; run it under torchrun:

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py CONFIG.json OUT STEPS STOP

Each rank trains three runs from CONFIG.json: OUT/full (STEPS steps), OUT/part (STOP
steps) and OUT/part again resumed to STEPS. After each, every rank writes a SHA-256 of the
weights, EMA and optimiser state it holds to OUT/<run>.rank<R>.digest, so the test can
check that the ranks agree and that the resumed run equals the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

import gen.train.loop as loop
from gen.train import TrainConfig, train

held: dict = {}


class _HeldEMA(loop.EMA):
    """The loop's EMA, remembering the model it averages (the loop keeps both local)."""

    def __init__(self, model, decay):
        super().__init__(model, decay)
        held["model"], held["ema"] = model, self


class _HeldAdamW(torch.optim.AdamW):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        held["optimizer"] = self


loop.EMA = _HeldEMA
torch.optim.AdamW = _HeldAdamW


def _tensors(obj, prefix=""):
    """(name, tensor-or-value) pairs of a nested state dict, in a fixed order."""
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _tensors(obj[key], f"{prefix}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _tensors(item, f"{prefix}.{i}")
    else:
        yield prefix, obj


def digest() -> str:
    h = hashlib.sha256()
    state = {"model": held["model"].state_dict(), "ema": held["ema"].state_dict(),
             "optimizer": held["optimizer"].state_dict()["state"]}
    for name, value in _tensors(state):
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def main(config: str, out: str, steps: str, stop: str) -> None:
    values = json.loads(Path(config).read_text())
    rank = int(os.environ["RANK"])
    out_dir = Path(out)

    def run(name: str, folder: str, n: int, resume: bool = False) -> None:
        cfg = TrainConfig.from_dict({**values, "out": str(out_dir / folder), "steps": n})
        train(cfg, resume=resume, device="cpu", progress=False)
        (out_dir / f"{name}.rank{rank}.digest").write_text(digest())

    run("full", "full", int(steps))
    run("part", "part", int(stop))
    run("resumed", "part", int(steps), resume=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
