"""Conventions shared by every command: device choice, seeding and compute precision, defined once."""

from __future__ import annotations

import ctypes
import random
from typing import TYPE_CHECKING

from gen.errors import GenError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
# The largest image side and clip length any command takes (data, training, generation):
# a 4096 x 4096 RGB frame is 48 MiB before a model touches it.
MAX_SIDE = 4096
MAX_FRAMES = 1024


def resolve_device(name: str | None = "auto") -> torch.device:
    """Turn a `--device` value into a torch.device.

    `auto` (or None) picks cuda, then mps, then cpu. An explicit device that is not
    available is an error rather than a silent fallback.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GenError(f"--device must be one of {DEVICE_CHOICES}, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GenError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GenError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise GenError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    elif device.type != "cpu":
        raise GenError(f"--device must be one of {DEVICE_CHOICES}, got {name!r}")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch from one `--seed`, and return a CPU generator.

    Noise for sampling is drawn from the returned generator on the CPU and then moved
    to the device, so the same seed gives the same sample on every device.
    """
    import numpy as np
    import torch

    if not 0 <= seed < 2**63:
        raise GenError(f"--seed must be a non-negative integer below 2**63, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


PRECISIONS = ("auto", "bf16", "fp32")


def compute_precision(precision: str, device: torch.device) -> str:
    """The precision sampling runs at: "bf16" (autocast, fp32 weights and sampler state)
    or "fp32". "auto" picks bf16 where the hardware multiplies bf16 natively (a CPU with
    AVX512-BF16 or AMX, a CUDA GPU with bf16), since there it is several times faster."""
    import torch

    if precision not in PRECISIONS:
        raise GenError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":  # torch exposes the CPU's bf16 instructions only through these probes
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return "bf16" if any(getattr(torch.cpu, p, lambda: False)() for p in probes) else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device):
    """A context running the model at `precision` (resolved by compute_precision)."""
    import torch

    return torch.autocast(device.type, torch.bfloat16, enabled=compute_precision(precision, device) == "bf16")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory(mmap_below: int = 32 << 20, keep: int = 1 << 30) -> bool:
    """Have glibc's malloc serve allocations under `mmap_below` bytes (32 MiB, glibc's most)
    from its heap, and keep up to `keep` freed bytes there instead of returning them to the
    system. A training step frees and reallocates the same activations every step; by
    default glibc hands the large ones back and the next step faults fresh pages in, which
    on this 2-core CPU makes a bf16 DiT step up to 1.6x slower and its speed wander from step
    to step (scripts/bench_train.py runs each way in a fresh process for this reason).
    Sampling a batch is the same pattern, so every `gen` command starts with it. The process
    may hold up to `keep` more memory. False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_below)) and bool(mallopt(M_TRIM_THRESHOLD, keep))
