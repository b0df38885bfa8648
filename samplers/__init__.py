"""samplers: noise schedules, the forward process, training targets, DDPM / DDIM /
DPM-Solver++ / Heun sampling, classifier-free guidance and a diffusers adapter.

    from samplers import NoiseSchedule, CFG, sample, q_sample, training_target
    sched = NoiseSchedule.create("linear", num_train_timesteps=1000, prediction="eps")
    x0 = sample(denoise, torch.randn(4, 3, 32, 32), sched, method="ddim", steps=50)

Imports only torch (diffusers lazily, for method="diffusers:<SchedulerClass>").
"""

from .clipping import DynamicThreshold
from .errors import SamplerError
from .guidance import CFG
from .sample import METHODS, sample
from .schedule import (
    BETA_SCHEDULES,
    PREDICTIONS,
    NoiseSchedule,
    alpha_bar_from_log_snr,
    alpha_bar_from_sigma,
    betas_for_alpha_bar,
    log_snr_from_alpha_bar,
    rescale_zero_terminal_snr,
    sigma_from_alpha_bar,
)
from .targets import LOSS_WEIGHTINGS, convert_prediction, loss_weights, q_sample, training_target
from .timesteps import SPACINGS, make_timesteps

__all__ = [
    "BETA_SCHEDULES",
    "CFG",
    "LOSS_WEIGHTINGS",
    "METHODS",
    "PREDICTIONS",
    "SPACINGS",
    "DynamicThreshold",
    "NoiseSchedule",
    "SamplerError",
    "alpha_bar_from_log_snr",
    "alpha_bar_from_sigma",
    "betas_for_alpha_bar",
    "convert_prediction",
    "log_snr_from_alpha_bar",
    "loss_weights",
    "make_timesteps",
    "q_sample",
    "rescale_zero_terminal_snr",
    "sample",
    "sigma_from_alpha_bar",
    "training_target",
]
