"""sample(..., known=(values, mask)): known clean values held by every sampler through its
x_0 predictions (inpainting, known frames), with nothing else changed."""

from __future__ import annotations

import pytest
import torch
from test_samplers_reference import make_schedule, toy_denoiser

from samplers import SamplerError, sample

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")
MU = torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 4, 1)
METHODS = ["ddim", "ddpm", "dpm++2m", "heun", "diffusers:UniPCMultistepScheduler", "diffusers:EulerDiscreteScheduler"]


@pytest.mark.parametrize("method", METHODS)
def test_known_values_are_where_the_sample_ends_and_the_rest_is_untouched(method):
    """The toy denoiser acts on each element alone, so holding half the elements at known
    values (a pattern far from the data) must leave the other half exactly as an
    unconstrained run draws it (same noise), and end the known half on the values."""
    sched = make_schedule("linear", "v")
    f = toy_denoiser(sched, MU, 0.5, wobble=0.0)
    x_T = torch.randn(64, 4, 16, generator=torch.Generator().manual_seed(0))
    values = torch.linspace(-3, 3, 16).expand(1, 4, 16)
    mask = torch.zeros(1, 1, 16)
    mask[..., :8] = 1

    def run(**extra):
        gen = {"generator": torch.Generator().manual_seed(1)} if method == "ddpm" else {}
        return sample(f, x_T, sched, method=method, steps=20, spacing="trailing", **gen, **extra)

    x, plain = run(known=(values, mask)), run()
    torch.testing.assert_close(x[..., :8], values[..., :8].expand(64, 4, 8), atol=2e-3, rtol=0)
    torch.testing.assert_close(x[..., 8:], plain[..., 8:], atol=1e-5, rtol=1e-5)
    assert (plain[..., :8] - values[..., :8]).abs().mean() > 0.5  # without it they are elsewhere
    torch.testing.assert_close(run(known=(values, torch.zeros(1))), plain)  # an empty mask changes nothing


def test_known_is_checked():
    sched = make_schedule("linear", "eps")
    x_T = torch.randn(2, 4, 8)
    for known, match in [(torch.zeros(2, 4, 8), "pair \\(values, mask\\)"),
                         ((torch.zeros(3, 4, 8), torch.ones(1)), "values of shape \\(3, 4, 8\\) does not broadcast"),
                         ((torch.zeros(2, 4, 8), torch.full((1,), 2.0)), "mask must lie in \\[0, 1\\]")]:
        with pytest.raises(SamplerError, match=match):
            sample(lambda x, t: x, x_T, sched, steps=2, known=known)
