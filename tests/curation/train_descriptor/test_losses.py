"""InfoNCE and the differential-entropy regulariser."""

import math

import pytest
import torch
import torch.nn.functional as F

from curation.train_descriptor.entropy_loss import DifferentialEntropyLoss
from curation.train_descriptor.infonce_loss import InfoNCELoss, two_view_targets


def test_infonce_matches_the_formula():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(6, 8), dim=1)
    targets = two_view_targets(3)
    loss = InfoNCELoss(0.1)(x, targets)
    expected = 0.0
    for i in range(6):
        j = (i + 3) % 6
        others = [k for k in range(6) if k != i]
        denominator = sum(math.exp(float(x[i] @ x[k]) / 0.1) for k in others)
        expected += -(float(x[i] @ x[j]) / 0.1 - math.log(denominator))
    assert float(loss) == pytest.approx(expected / 6, rel=1e-5)


def test_infonce_is_low_when_views_match_and_negatives_differ():
    eye = torch.eye(4)
    aligned = torch.cat([eye, eye])
    shuffled = torch.cat([eye, eye[[1, 2, 3, 0]]])
    loss = InfoNCELoss(0.05)
    targets = two_view_targets(4)
    assert float(loss(aligned, targets)) < 0.01 < float(loss(shuffled, targets))


def test_entropy_uses_the_closest_non_matching_descriptor():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    positives = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]).bool()
    loss = DifferentialEntropyLoss()(x, positives)
    assert float(loss) == pytest.approx(-math.log(math.sqrt(2.0)), rel=1e-5)
    # without excluding positives the identical pairs would dominate (distance 0)
    assert float(DifferentialEntropyLoss()(x, torch.zeros(4, 4, dtype=torch.bool))) > 10


def test_entropy_gradient_is_finite_for_identical_negatives():
    x = F.normalize(torch.ones(4, 3), dim=1).requires_grad_()
    DifferentialEntropyLoss()(x, torch.zeros(4, 4, dtype=torch.bool)).backward()
    assert torch.isfinite(x.grad).all()
