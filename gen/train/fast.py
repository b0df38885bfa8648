"""The trainer's fast path, in one place for `gen train` and scripts/bench_train.py.

    threads(cfg.threads)                        # torch's intra-op threads (None: torch's default)
    compile_denoiser(model, run / "compile-cache")   # with --compile: inductor, cached on disk

`compile_denoiser` compiles the denoiser's forward in place (`nn.Module.compile`, so the
state-dict keys, checkpoints and EMA are unchanged: a run started compiled resumes
uncompiled and the other way round). Inductor's generated kernels and FX graphs are cached
under the run folder, so a resumed run reuses them instead of compiling again. Where no
compiler works (no C++ toolchain, an unsupported op), dynamo falls back to eager
(`suppress_errors`), and the run goes on at eager speed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def threads(count: int | None) -> int:
    """Set torch's intra-op thread count (None keeps torch's default, one per core);
    returns the count in force. On a 2-core machine more threads than cores only adds
    contention (see scripts/bench_train.py)."""
    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()


def compile_denoiser(model: torch.nn.Module, cache: Path | None) -> bool:
    """Compile `model.denoiser` (or `model` itself) in place with inductor; False when
    torch.compile is not available here. `cache`: the folder for inductor's on-disk caches."""
    if not hasattr(torch, "compile"):
        return False
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # read when inductor first compiles
    from torch import _dynamo

    _dynamo.config.suppress_errors = True  # a graph inductor cannot build runs eagerly
    target = getattr(model, "denoiser", model)
    target.compile(dynamic=False)
    return True


def mixed_precision(device: torch.device, bf16: bool) -> torch.dtype | None:
    """The autocast dtype of a run: bf16 where the device has it, fp16 (with a gradient
    scaler) on a CUDA GPU without bf16, None (float32) when bf16 is switched off."""
    if not bf16:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
