"""DPM-Solver++(2M): the second-order multistep solver of Lu et al. 2022 (Algorithm 2).

It integrates the probability-flow ODE in the data-prediction form, in the log-SNR
half-variable lambda = log(alpha / sigma) with alpha = sqrt(alpha_bar),
sigma = sqrt(1 - alpha_bar). For a step t -> p with h = lambda_p - lambda_t:

    first order (= DDIM, eta 0):  x_p = (sigma_p / sigma_t) x_t - alpha_p (e^{-h} - 1) x0_t
    second order:                 D = (1 + 1 / (2 r)) x0_t - 1 / (2 r) x0_prev,  r = h_prev / h
                                  x_p = (sigma_p / sigma_t) x_t - alpha_p (e^{-h} - 1) D

The first step is first order (no history yet); the last step goes to clean data
(sigma = 0, lambda = +inf), where both formulas reduce to x_p = x0_t.

At zero terminal SNR lambda_{T-1} = -inf; as diffusers' DPMSolverMultistepScheduler does,
the solver then uses alpha_bar = 2^-24 at that one timestep, both for the step and for
converting the model's output to x_0.
"""

from __future__ import annotations

import math

ZERO_SNR_ALPHA_BAR = 2.0**-24


def dpm_solver_2m(model, x, timesteps, *, noise, on_step):
    """Run DPM-Solver++(2M) over `timesteps`; returns the final sample (or the current
    x_t if `on_step` asks to stop). Deterministic: `noise` is not used."""
    ab = [model.sched.alpha_bars[t] or ZERO_SNR_ALPHA_BAR for t in timesteps]
    lam = [0.5 * (math.log(a) - math.log1p(-a)) for a in ab]
    n = len(timesteps)
    x0_prev = None
    for i, t in enumerate(timesteps):
        x0, _ = model(x, t, alpha_bar=ab[i])
        if i + 1 == n:
            x = x0
        else:
            ab_p = ab[i + 1]
            h = lam[i + 1] - lam[i]
            c_x = ((1 - ab_p) / (1 - ab[i])) ** 0.5
            c_d = -(ab_p**0.5) * math.expm1(-h)  # -alpha_p (e^{-h} - 1)
            if x0_prev is None:
                d = x0
            else:
                r = (lam[i] - lam[i - 1]) / h
                d = x0.add(x0 - x0_prev, alpha=0.5 / r)
            x = (c_x * x).add_(d, alpha=c_d)
        x0_prev = x0
        if on_step(i, t, x, x0):
            break
    return x
