"""Which training timesteps a sampler visits.

With T training timesteps and N sampling steps (Lin et al. 2023, Table 2):

    linspace   round(i (T - 1) / (N - 1)),   i = N-1 .. 0     e.g. 999, 888, ..., 111, 0   (N = 10)
    leading    i * floor(T / N),             i = N-1 .. 0     e.g. 900, 800, ..., 100, 0
    trailing   round(T - i T / N) - 1,       i = 0 .. N-1     e.g. 999, 899, ..., 199, 99

    karras     sigma_i = (smax^(1/7) + i/(N-1) (smin^(1/7) - smax^(1/7)))^7   (Karras et al. 2022, eq. 5)
    exponential  log sigma_i uniform from log smax to log smin   (k-diffusion's get_sigmas_exponential)

The last two space the schedule's noise levels sigma = sqrt((1 - alpha_bar) / alpha_bar)
between the first and the last training timestep's (at zero terminal SNR, where
sigma(T-1) is infinite, between sigma(T-2)'s and sigma(0)'s, with T-1 kept as the first
timestep), and take each level's nearest training timestep in log sigma; where two
levels fall on one timestep (many steps near t = 0) the later ones move down one by one,
so the N timesteps stay distinct. These need the schedule: make_timesteps(..., sched=).
Rounding of the first three is exact (rational, ties to even), so every N gives exactly N distinct
timesteps. After the last one every sampler steps to clean data (alpha_bar = 1). Each
step's previous timestep is the next entry of this list, never t - T // N.
"""

from __future__ import annotations

from fractions import Fraction

from .errors import SamplerError, unknown_name

SPACINGS = ("leading", "trailing", "linspace", "karras", "exponential")
SIGMA_SPACINGS = ("karras", "exponential")


def make_timesteps(num_train_timesteps: int, steps: int, spacing: str = "leading", sched=None) -> list[int]:
    """The N descending training timesteps for `steps` sampling steps with the given spacing
    (karras and exponential space the noise levels of `sched`, which they need)."""
    T = num_train_timesteps
    if spacing not in SPACINGS:
        raise unknown_name("spacing", spacing, SPACINGS)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise SamplerError(
            f"steps must be an integer between 1 and {T} (the schedule has {T} training timesteps), got {steps!r}"
        )
    N = steps
    if spacing in SIGMA_SPACINGS:
        if sched is None:
            raise SamplerError(f"spacing {spacing!r} spaces the schedule's noise levels: pass sched=")
        return _sigma_timesteps(sched, N, spacing)
    if spacing == "linspace":
        ts = [round(Fraction(i * (T - 1), N - 1)) for i in range(N)] if N > 1 else [0]
        return ts[::-1]
    if spacing == "leading":
        return [i * (T // N) for i in range(N)][::-1]
    return [round(Fraction(T * (N - i), N)) - 1 for i in range(N)]


def _sigma_timesteps(sched, N: int, spacing: str, rho: float = 7.0) -> list[int]:
    import bisect
    import math

    ab = [float(a) for a in sched.alpha_bars]
    T = len(ab)
    log_sigma = [0.5 * math.log((1 - a) / a) if a > 0 else math.inf for a in ab]  # increasing in t
    top = T - 1 if math.isfinite(log_sigma[-1]) else T - 2
    hi, lo = math.exp(log_sigma[top]), math.exp(log_sigma[0])
    if N == 1:
        return [T - 1]
    if spacing == "karras":
        levels = [(hi ** (1 / rho) + i / (N - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(N)]
    else:
        levels = [math.exp(math.log(hi) + i / (N - 1) * (math.log(lo) - math.log(hi))) for i in range(N)]
    ts = []
    for level in levels:  # the nearest timestep in log sigma
        x = math.log(level)
        k = min(max(bisect.bisect_left(log_sigma, x, hi=top + 1), 1), top)
        ts.append(k if abs(log_sigma[k] - x) <= abs(log_sigma[k - 1] - x) else k - 1)
    ts[0] = T - 1
    for i in range(1, N):  # distinct: a timestep taken already moves the later ones down
        ts[i] = min(ts[i], ts[i - 1] - 1)
    for i in range(N - 1, -1, -1):  # and none below 0 (N <= T leaves room)
        ts[i] = max(ts[i], N - 1 - i)
    return ts


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


__all__ = ["SIGMA_SPACINGS", "SPACINGS", "check_timesteps", "make_timesteps"]
