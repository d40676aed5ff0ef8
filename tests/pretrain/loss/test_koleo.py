import math

import pytest
import torch

from pretrain.loss import KoLeoLoss


@pytest.mark.parametrize("n", [3, 4, 7])
def test_regular_polygon_matches_closed_form(n):
    angles = torch.arange(n) * 2 * math.pi / n
    # Scaled and embedded in 5-d: the loss normalises, so only directions matter.
    points = torch.zeros(n, 5)
    points[:, 0], points[:, 1] = 3 * torch.cos(angles), 3 * torch.sin(angles)
    expected = -math.log(2 * math.sin(math.pi / n))
    assert KoLeoLoss()(points).item() == pytest.approx(expected, abs=1e-6)


def test_nearest_neighbour_excludes_self_and_uses_dot_product():
    points = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0], [0.6, -0.8]])
    assert KoLeoLoss.nearest_neighbours(points).tolist() == [1, 0, 3, 0]
    # Distances to those neighbours: sqrt(0.4), sqrt(0.4), sqrt(3.2), sqrt(0.8).
    expected = -sum(math.log(d**0.5) for d in (0.4, 0.4, 3.2, 0.8)) / 4
    assert KoLeoLoss()(points).item() == pytest.approx(expected, abs=1e-6)


def test_duplicates_stay_finite_and_single_sample_is_rejected():
    points = torch.ones(3, 4, requires_grad=True)
    value = KoLeoLoss()(points)
    assert value.item() == pytest.approx(-math.log(1e-8), rel=1e-6)
    value.backward()
    assert torch.isfinite(points.grad).all()
    with pytest.raises(ValueError, match="B >= 2"):
        KoLeoLoss()(torch.randn(1, 4))
