"""Motion-compensated in-between frames (gen.pipeline.motion), the temporal SR start."""

from __future__ import annotations

import pytest
import torch

from gen.pipeline.motion import bilateral_midframes


def _square(x: int, y: int, size: int = 16) -> torch.Tensor:
    """A 4x4 two-colour square at (x, y) on a flat background, (3, size, size) in [-1, 1]."""
    frame = torch.full((3, size, size), -0.5)
    frame[0, y:y + 4, x:x + 4], frame[1, y:y + 4, x:x + 4] = 0.8, -0.2
    return frame


@pytest.mark.parametrize("dx, dy", [(2, 0), (-2, 0), (0, -2), (2, 2), (4, 0), (-2, 2)])
def test_a_moving_square_is_drawn_halfway_along_its_path(dx, dy):
    before, after = _square(5, 6), _square(5 + dx, 6 + dy)
    truth = _square(5 + dx // 2, 6 + dy // 2)
    torch.testing.assert_close(bilateral_midframes(before, after), truth, atol=0, rtol=0)
    assert ((before + after) / 2 - truth).abs().max() > 0.6  # the blend draws it twice at half strength


def test_where_nothing_moves_it_is_the_frame_and_elsewhere_the_blend_of_a_match():
    g = torch.Generator().manual_seed(0)
    still = torch.rand((2, 5, 3, 12, 12), generator=g) * 2 - 1  # any leading dims
    torch.testing.assert_close(bilateral_midframes(still, still), still, atol=0, rtol=0)
    other = torch.rand((2, 5, 3, 12, 12), generator=g) * 2 - 1
    mid = bilateral_midframes(still, other)
    assert mid.shape == still.shape and mid.dtype == still.dtype
    assert mid.min() >= -1 and mid.max() <= 1  # each pixel is the mean of two pixels of the frames


def test_frames_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"one shape, got \(3, 8, 8\) and \(3, 8, 9\)"):
        bilateral_midframes(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
