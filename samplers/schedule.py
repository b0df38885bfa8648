"""The noise schedule of a discrete-time variance-preserving diffusion.

The forward process (Ho et al. 2020, eq. 4) is

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),   alpha_bar_t = prod_{s<=t} (1 - beta_s)

for training timesteps t = 0 .. T-1. Three views of the same noise level are used here:

    alpha_bar  in (0, 1]        the signal fraction above
    sigma      = sqrt((1 - alpha_bar) / alpha_bar)   the noise-to-signal ratio of x_t / sqrt(alpha_bar)
                                  (the sigma of k-diffusion / EDM and of diffusers' `sigmas`)
    log_snr    = log(alpha_bar / (1 - alpha_bar)) = -2 log sigma   (lambda of DPM-Solver)

`NoiseSchedule` is a frozen dataclass holding the checkpoint's schedule settings and the
prediction type its denoiser was trained for; its betas and alphas_cumprod are float64
tensors computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch

from .errors import SamplerError, unknown_name

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTIONS = ("eps", "v", "x0")

# Names used by diffusers' scheduler configs, mapped to ours.
_SCHEDULE_ALIASES = {"squaredcos_cap_v2": "cosine"}
_PREDICTION_ALIASES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def betas_for_alpha_bar(num_train_timesteps: int, alpha_bar, max_beta: float = 0.999) -> torch.Tensor:
    """Discretise a continuous alpha_bar(s), s in [0, 1], into T betas (float64).

    beta_t = min(1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), max_beta), as in
    Nichol & Dhariwal 2021, eq. 17 and the text after it (the cap avoids a singular
    last step).
    """
    T = num_train_timesteps
    betas = [min(1.0 - alpha_bar((t + 1) / T) / alpha_bar(t / T), max_beta) for t in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


def cosine_alpha_bar(s: float, offset: float = 0.008) -> float:
    """The cosine schedule of Nichol & Dhariwal 2021, eq. 17 (f(t) / f(0) with f(0) folded in)."""
    return math.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so the last timestep has SNR exactly 0 (Lin et al. 2023, Algorithm 1).

    sqrt(alpha_bar) is shifted so its last value is 0 and scaled so its first value is
    unchanged; the betas are then recovered from the ratios of consecutive alpha_bars.
    """
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    alphas_cumprod = sqrt_ab**2
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


def sigma_from_alpha_bar(alpha_bar):
    """sigma = sqrt((1 - alpha_bar) / alpha_bar); infinite where alpha_bar = 0."""
    if isinstance(alpha_bar, torch.Tensor):
        return ((1 - alpha_bar) / alpha_bar).sqrt()
    return math.inf if alpha_bar == 0 else math.sqrt((1 - alpha_bar) / alpha_bar)


def alpha_bar_from_sigma(sigma):
    """alpha_bar = 1 / (1 + sigma^2), the inverse of `sigma_from_alpha_bar`."""
    return 1 / (1 + sigma**2)


def log_snr_from_alpha_bar(alpha_bar):
    """log_snr = log(alpha_bar / (1 - alpha_bar)); -inf where alpha_bar = 0."""
    if isinstance(alpha_bar, torch.Tensor):
        return alpha_bar.log() - torch.log1p(-alpha_bar)
    return -math.inf if alpha_bar == 0 else math.log(alpha_bar) - math.log1p(-alpha_bar)


def alpha_bar_from_log_snr(log_snr):
    """alpha_bar = sigmoid(log_snr), the inverse of `log_snr_from_alpha_bar`."""
    if isinstance(log_snr, torch.Tensor):
        return torch.sigmoid(log_snr)
    return 1 / (1 + math.exp(-log_snr)) if log_snr > -700 else 0.0


@dataclass(frozen=True)
class NoiseSchedule:
    """A checkpoint's noise schedule and prediction type (a JSON-round-tripping config).

    Args:
        beta_schedule: "linear" (Ho et al. 2020), "scaled_linear" (linear in sqrt(beta),
            Stable Diffusion) or "cosine" (Nichol & Dhariwal 2021; diffusers calls it
            "squaredcos_cap_v2"). beta_start / beta_end are unused by "cosine".
        num_train_timesteps: T, the number of training timesteps.
        prediction: what the denoiser predicts: "eps" (the noise), "v"
            (sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0, Salimans & Ho 2022) or "x0".
        zero_terminal_snr: rescale so alpha_bar_{T-1} = 0 (Lin et al. 2023). Needs
            prediction "v" or "x0": at zero SNR an eps prediction says nothing about x_0.

    Derived (float64, not part of the config): `betas`, `alphas_cumprod`, and the same
    values as a tuple of Python floats for the samplers' scalar arithmetic.
    """

    beta_schedule: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "eps"
    zero_terminal_snr: bool = False
    betas: torch.Tensor = field(init=False, repr=False, compare=False)
    alphas_cumprod: torch.Tensor = field(init=False, repr=False, compare=False)
    alpha_bars: tuple = field(init=False, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        beta_schedule: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: str = "eps",
        zero_terminal_snr: bool = False,
    ) -> NoiseSchedule:
        """Build a schedule by name; diffusers' names ("squaredcos_cap_v2", "epsilon",
        "v_prediction", "sample") are accepted and stored as ours."""
        return cls(
            beta_schedule=_SCHEDULE_ALIASES.get(beta_schedule, beta_schedule),
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction=_PREDICTION_ALIASES.get(prediction, prediction),
            zero_terminal_snr=zero_terminal_snr,
        )

    @classmethod
    def from_diffusers_config(cls, config: dict) -> NoiseSchedule:
        """Read the schedule part of a diffusers scheduler config (scheduler_config.json)."""
        if config.get("trained_betas") is not None:
            raise SamplerError("diffusers configs with trained_betas are not supported; use a named beta_schedule")
        return cls.create(
            beta_schedule=config.get("beta_schedule", "linear"),
            num_train_timesteps=config.get("num_train_timesteps", 1000),
            beta_start=config.get("beta_start", 1e-4),
            beta_end=config.get("beta_end", 0.02),
            prediction=config.get("prediction_type", "epsilon"),
            zero_terminal_snr=config.get("rescale_betas_zero_snr", False),
        )

    def __post_init__(self) -> None:
        self._validate()
        T = self.num_train_timesteps
        if self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float64)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, T, dtype=torch.float64) ** 2
        else:
            betas = betas_for_alpha_bar(T, cosine_alpha_bar)
        if self.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        object.__setattr__(self, "alpha_bars", tuple(alphas_cumprod.tolist()))

    def _validate(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise unknown_name("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        if self.prediction not in PREDICTIONS:
            raise unknown_name("prediction", self.prediction, PREDICTIONS)
        T = self.num_train_timesteps
        if isinstance(T, bool) or not isinstance(T, int) or T < 2:
            raise SamplerError(f"num_train_timesteps must be an integer >= 2, got {T!r}")
        if self.beta_schedule != "cosine" and not 0 < self.beta_start < self.beta_end < 1:
            raise SamplerError(
                f"beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1 for the "
                f"{self.beta_schedule!r} schedule, got beta_start={self.beta_start}, beta_end={self.beta_end}"
            )
        if self.zero_terminal_snr and self.prediction == "eps":
            raise SamplerError(
                "zero_terminal_snr=True needs prediction 'v' or 'x0', got 'eps': at the last timestep "
                "alpha_bar = 0 and x_t is pure noise, so a noise prediction cannot give x_0 (Lin et al. 2023, sec. 3.2)"
            )

    # -- conversions at training timesteps -------------------------------------------------

    @property
    def sigmas(self) -> torch.Tensor:
        """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for every training timestep (float64)."""
        return sigma_from_alpha_bar(self.alphas_cumprod)

    @property
    def log_snrs(self) -> torch.Tensor:
        """log(alpha_bar_t / (1 - alpha_bar_t)) for every training timestep (float64)."""
        return log_snr_from_alpha_bar(self.alphas_cumprod)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar_t / (1 - alpha_bar_t) at integer timesteps `t`, float64 on t's device."""
        ab = self.alphas_cumprod.to(t.device)[t.long()]
        return ab / (1 - ab)

    # -- config round trip -----------------------------------------------------------------

    def to_dict(self) -> dict:
        """The config as a plain JSON-serialisable dict (derived tensors left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, config: dict) -> NoiseSchedule:
        """Inverse of `to_dict`; unknown keys are an error that lists the known ones."""
        known = [f.name for f in fields(cls) if f.init]
        extra = sorted(set(config) - set(known))
        if extra:
            raise SamplerError(f"unknown NoiseSchedule config keys {extra}; known keys are {known}")
        return cls.create(**config)


__all__ = [
    "BETA_SCHEDULES",
    "PREDICTIONS",
    "NoiseSchedule",
    "alpha_bar_from_log_snr",
    "alpha_bar_from_sigma",
    "betas_for_alpha_bar",
    "cosine_alpha_bar",
    "log_snr_from_alpha_bar",
    "rescale_zero_terminal_snr",
    "sigma_from_alpha_bar",
]
