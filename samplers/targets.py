"""The forward process, the three prediction targets and the training loss weights.

With a = sqrt(alpha_bar_t) and s = sqrt(1 - alpha_bar_t) (so a^2 + s^2 = 1):

    x_t = a x_0 + s eps                                   (Ho et al. 2020, eq. 4)
    v   = a eps - s x_0                                   (Salimans & Ho 2022, sec. 4)

and each of eps, v, x_0 determines the other two given x_t:

    from eps: x_0 = (x_t - s eps) / a
    from v:   x_0 = a x_t - s v,     eps = a v + s x_t
    from x_0: eps = (x_t - a x_0) / s

The same formulas serve the samplers (a, s Python floats) and training (a, s tensors
shaped (B, 1, ..., 1)).
"""

from __future__ import annotations

import torch

from .errors import SamplerError, unknown_name
from .schedule import PREDICTIONS, NoiseSchedule

LOSS_WEIGHTINGS = ("uniform", "min_snr")


def x0_eps_from_prediction(pred, x_t, a, s, prediction: str):
    """(x_0, eps) implied by a model prediction of type `prediction` at x_t."""
    if prediction == "eps":
        return (x_t - s * pred) / a, pred
    if prediction == "v":
        return a * x_t - s * pred, a * pred + s * x_t
    if prediction == "x0":
        return pred, (x_t - a * pred) / s
    raise unknown_name("prediction", prediction, PREDICTIONS)


def prediction_from_x0_eps(x0, eps, a, s, prediction: str):
    """The target of type `prediction` for a given (x_0, eps) pair."""
    if prediction == "eps":
        return eps
    if prediction == "v":
        return a * eps - s * x0
    if prediction == "x0":
        return x0
    raise unknown_name("prediction", prediction, PREDICTIONS)


def _coefficients(t: torch.Tensor, like: torch.Tensor, sched: NoiseSchedule):
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) as (B, 1, ..., 1) tensors in like's dtype."""
    if t.dim() != 1 or t.shape[0] != like.shape[0]:
        raise SamplerError(f"t must be a (B,) tensor with B = {like.shape[0]}, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise SamplerError(f"t must hold integer training timesteps, got dtype {t.dtype}")
    T = sched.num_train_timesteps
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise SamplerError(f"t must lie in [0, {T - 1}] (the schedule has {T} training timesteps), got {t.tolist()}")
    ab = sched.alphas_cumprod.to(like.device)[t.to(like.device)]
    shape = (-1,) + (1,) * (like.dim() - 1)
    dtype = like.dtype if like.dtype.is_floating_point else torch.float32
    return ab.sqrt().to(dtype).view(shape), (1 - ab).sqrt().to(dtype).view(shape)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, sched: NoiseSchedule) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise (Ho et al. eq. 4).

    `t` is a (B,) integer tensor of training timesteps; x0 may have any rank.
    """
    if noise.shape != x0.shape:
        raise SamplerError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    a, s = _coefficients(t, x0, sched)
    return a * x0 + s * noise


def training_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sched: NoiseSchedule) -> torch.Tensor:
    """What the denoiser should output for x_t = q_sample(x0, t, noise): eps, v or x_0 per `sched.prediction`."""
    if noise.shape != x0.shape:
        raise SamplerError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    a, s = _coefficients(t, x0, sched)
    return prediction_from_x0_eps(x0, noise, a, s, sched.prediction)


def convert_prediction(
    pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, sched: NoiseSchedule, to: str, source: str | None = None
) -> torch.Tensor:
    """Convert a prediction at (x_t, t) from `source` (default: sched.prediction) to type `to`."""
    if to not in PREDICTIONS:
        raise unknown_name("prediction", to, PREDICTIONS)
    a, s = _coefficients(t, x_t, sched)
    x0, eps = x0_eps_from_prediction(pred, x_t, a, s, source or sched.prediction)
    return prediction_from_x0_eps(x0, eps, a, s, to)


def loss_weights(t: torch.Tensor, sched: NoiseSchedule, weighting: str = "uniform", gamma: float = 5.0) -> torch.Tensor:
    """Per-example weights (B,) for the mean-squared error against `training_target`.

    "uniform": all ones (the "simple" loss of Ho et al. 2020, eq. 14, in the schedule's
    prediction space). "min_snr": Min-SNR-gamma (Hang et al. 2023, eq. 9 and sec. 3.4),
    which weights the x_0-space loss by min(SNR_t, gamma); expressed in the prediction
    space that is min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1) for v and
    min(SNR, gamma) for x0. Where SNR = 0 (zero terminal SNR) the v and x0 weights are 0.
    """
    if weighting not in LOSS_WEIGHTINGS:
        raise unknown_name("loss weighting", weighting, LOSS_WEIGHTINGS)
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    if not gamma > 0:
        raise SamplerError(f"min-SNR gamma must be > 0, got {gamma}")
    snr = sched.snr(t)
    clipped = snr.clamp(max=gamma)
    if sched.prediction == "eps":
        w = torch.where(snr > gamma, gamma / snr.clamp(min=gamma), torch.ones_like(snr))
    elif sched.prediction == "v":
        w = clipped / (snr + 1)
    else:
        w = clipped
    return w.float()


__all__ = [
    "LOSS_WEIGHTINGS",
    "convert_prediction",
    "loss_weights",
    "prediction_from_x0_eps",
    "q_sample",
    "training_target",
    "x0_eps_from_prediction",
]
