"""Exponential moving average of weights, with a warm-up on the decay."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, d = min(decay, (1 + n) / (10 + n)).

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) lets the
    average follow the weights closely at the start of a short run.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.float(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
        self.updates = updates


def averaged(model: nn.Module, ema: EMA) -> nn.Module:
    """A copy of `model` holding the EMA weights, in eval mode (and eager: a module compiled
    for training, `nn.Module.compile`, is copied without its compiled forward)."""
    import copy

    compiled = {m: m._compiled_call_impl for m in model.modules() if getattr(m, "_compiled_call_impl", None)}
    for m in compiled:
        m._compiled_call_impl = None
    try:
        copy_ = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    finally:
        for m, impl in compiled.items():
            m._compiled_call_impl = impl
    copy_.load_state_dict({k: v.to(p.dtype) for (k, v), p in zip(ema.state_dict().items(),
                                                                  copy_.state_dict().values())})
    return copy_.eval()
