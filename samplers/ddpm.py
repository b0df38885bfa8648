"""Ancestral DDPM sampling (Ho et al. 2020) on any descending timestep sequence.

For a step t -> p (p the next timestep in the sequence, or clean data after the last),
with alpha_t = alpha_bar_t / alpha_bar_p and beta_t = 1 - alpha_t (the "respaced" betas
of Nichol & Dhariwal 2021, sec. 4), x_{p} is drawn from the posterior
q(x_p | x_t, x_0) with x_0 predicted by the model (Ho et al. eq. 6-7; eq. 11 is the
same mean written with eps):

    mean = sqrt(alpha_bar_p) beta_t / (1 - alpha_bar_t) x_0 + sqrt(alpha_t) (1 - alpha_bar_p) / (1 - alpha_bar_t) x_t
    var  = (1 - alpha_bar_p) / (1 - alpha_bar_t) beta_t     "fixed_small" (beta tilde)
         = beta_t                                           "fixed_large"

No noise is added on the last step (Ho et al. Algorithm 2, "z = 0 if t = 1").
"""

from __future__ import annotations

VARIANCES = ("fixed_small", "fixed_large")


def ddpm(model, x, timesteps, *, variance="fixed_small", noise, on_step):
    """Run DDPM ancestral steps over `timesteps`; returns the final sample (or the
    current x_t if `on_step` asks to stop)."""
    ab = model.sched.alpha_bars
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        ab_t = ab[t]
        ab_p = ab[timesteps[i + 1]] if i + 1 < n else 1.0
        alpha = ab_t / ab_p
        beta = 1 - alpha
        x0, _ = model(x, t)
        c_x0 = ab_p**0.5 * beta / (1 - ab_t)
        c_xt = alpha**0.5 * (1 - ab_p) / (1 - ab_t)
        x = (c_x0 * x0).add_(x, alpha=c_xt)
        if i + 1 < n:
            var = beta if variance == "fixed_large" else max((1 - ab_p) / (1 - ab_t) * beta, 1e-20)
            x = x.add_(noise(i, x), alpha=var**0.5)
        if on_step(i, t, x, x0):
            break
    return x
