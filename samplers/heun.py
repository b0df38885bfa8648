"""A Heun (trapezoidal predictor-corrector) sampler in DPM-Solver++ form.

Heun's method of Karras et al. 2022 (Algorithm 1) averages the slope at both ends of
a step. Here the average is taken in the exponential-integrator form of the
probability-flow ODE that DPM-Solver++ uses (Lu et al. 2022, eq. 9), in the log-SNR
half-variable lambda = log(alpha / sigma), alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar).
For a step t -> p with h = lambda_p - lambda_t:

    predictor:  u   = (sigma_p / sigma_t) x_t - alpha_p (e^{-h} - 1) x0_t           (= DDIM, eta 0)
    corrector:  x_p = (sigma_p / sigma_t) x_t - alpha_p (e^{-h} - 1) (x0_t + x0(u, p)) / 2

which is DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1) with r = 1, so the extra
evaluation falls on the next grid timestep. Unlike a trapezoid in sigma~ = sigma / alpha,
it stays accurate on the very wide first step of the cosine schedule (sigma~ from 2e4
to ~10) and is defined at zero terminal SNR. The last step (to clean data) returns
x0_t, so N timesteps cost 2N - 1 model evaluations.
"""

from __future__ import annotations


def heun(model, x, timesteps, *, noise, on_step):
    """Run Heun steps over `timesteps`; returns the final sample (or the current x_t if
    `on_step` asks to stop). Deterministic: `noise` is not used."""
    ab = model.sched.alpha_bars
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        x0, _ = model(x, t)
        if i + 1 == n:
            x = x0
        else:
            p = timesteps[i + 1]
            ab_t, ab_p = ab[t], ab[p]
            c_x = ((1 - ab_p) / (1 - ab_t)) ** 0.5  # sigma_p / sigma_t
            # -alpha_p (e^{-h} - 1) with e^{-h} = (sigma_p alpha_t) / (alpha_p sigma_t)
            c_d = ab_p**0.5 - c_x * ab_t**0.5
            u = (c_x * x).add_(x0, alpha=c_d)
            x0_u, _ = model(u, p)
            x = (c_x * x).add_(x0 + x0_u, alpha=0.5 * c_d)
        if on_step(i, t, x, x0):
            break
    return x

