"""DDIM sampling (Song et al. 2021) with any eta in [0, 1].

For a step t -> p (p the next timestep in the sequence, or clean data with
alpha_bar_p = 1 after the last), Song et al. eq. 12:

    x_p = sqrt(alpha_bar_p) x_0 + sqrt(1 - alpha_bar_p - sigma^2) eps + sigma z
    sigma = eta sqrt((1 - alpha_bar_p) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_p)   (eq. 16)

eta = 0 is the deterministic DDIM (the probability-flow ODE's Euler step in
x / sqrt(alpha_bar)); eta = 1 is DDPM's posterior with the "fixed_small" variance.
"""

from __future__ import annotations


def ddim(model, x, timesteps, *, eta=0.0, noise, on_step):
    """Run DDIM steps over `timesteps`; returns the final sample (or the current x_t if
    `on_step` asks to stop)."""
    ab = model.sched.alpha_bars
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        ab_t = ab[t]
        ab_p = ab[timesteps[i + 1]] if i + 1 < n else 1.0
        x0, eps = model(x, t)
        sigma = eta * ((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)) ** 0.5
        c_eps = max(1 - ab_p - sigma**2, 0.0) ** 0.5
        x = (ab_p**0.5 * x0).add_(eps, alpha=c_eps)
        if sigma > 0:
            x = x.add_(noise(i, x), alpha=sigma)
        if on_step(i, t, x, x0):
            break
    return x

