"""Which training timesteps a sampler visits.

With T training timesteps and N sampling steps (Lin et al. 2023, Table 2):

    linspace   round(i (T - 1) / (N - 1)),   i = N-1 .. 0     e.g. 999, 888, ..., 111, 0   (N = 10)
    leading    i * floor(T / N),             i = N-1 .. 0     e.g. 900, 800, ..., 100, 0
    trailing   round(T - i T / N) - 1,       i = 0 .. N-1     e.g. 999, 899, ..., 199, 99

Rounding is exact (rational, ties to even), so every N gives exactly N distinct
timesteps. After the last one every sampler steps to clean data (alpha_bar = 1). Each
step's previous timestep is the next entry of this list, never t - T // N.
"""

from __future__ import annotations

from fractions import Fraction

from .errors import SamplerError, unknown_name

SPACINGS = ("leading", "trailing", "linspace")


def make_timesteps(num_train_timesteps: int, steps: int, spacing: str = "leading") -> list[int]:
    """The N descending training timesteps for `steps` sampling steps with the given spacing."""
    T = num_train_timesteps
    if spacing not in SPACINGS:
        raise unknown_name("spacing", spacing, SPACINGS)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise SamplerError(
            f"steps must be an integer between 1 and {T} (the schedule has {T} training timesteps), got {steps!r}"
        )
    N = steps
    if spacing == "linspace":
        ts = [round(Fraction(i * (T - 1), N - 1)) for i in range(N)] if N > 1 else [0]
        return ts[::-1]
    if spacing == "leading":
        return [i * (T // N) for i in range(N)][::-1]
    return [round(Fraction(T * (N - i), N)) - 1 for i in range(N)]


def check_timesteps(timesteps, num_train_timesteps: int) -> list[int]:
    """Validate a user-given list of timesteps: non-empty, integers, strictly descending, in [0, T-1]."""
    T = num_train_timesteps
    try:
        ts = [int(t) for t in timesteps]
    except (TypeError, ValueError):
        raise SamplerError(f"timesteps must be a list of integers, got {timesteps!r}") from None
    if any(int(t) != t for t in timesteps):
        raise SamplerError(f"timesteps must be integers, got {list(timesteps)!r}")
    if not ts:
        raise SamplerError("timesteps must not be empty")
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise SamplerError(f"timesteps must be strictly descending, got {ts}")
    if ts[0] >= T or ts[-1] < 0:
        raise SamplerError(f"timesteps must lie in [0, {T - 1}] (the schedule has {T} training timesteps), got {ts}")
    return ts


__all__ = ["SPACINGS", "check_timesteps", "make_timesteps"]
