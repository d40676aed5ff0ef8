import random

import pytest
import torch

from pretrain.data import MaskingGenerator


def _generator(seed=0, grid=16):
    # As the official training: budget per rectangle capped at half the grid.
    return MaskingGenerator(
        (grid, grid), max_num_patches=0.5 * grid * grid, rng=random.Random(seed)
    )


def test_never_masks_more_than_requested():
    generator = _generator()
    rng = random.Random(1)
    for _ in range(300):
        requested = int(256 * rng.uniform(0.1, 0.5))
        mask = generator(requested)
        assert mask.shape == (16, 16) and mask.dtype == torch.bool
        # The reference rule is stricter than "ratio plus one block": never above the ratio.
        assert 0 < mask.sum() <= requested


def test_masked_fraction_matches_sampled_ratios():
    generator = _generator(seed=2)
    rng = random.Random(3)
    requested_fractions, achieved = [], []
    for _ in range(1000):
        ratio = rng.uniform(0.1, 0.5)
        requested = int(256 * ratio)
        requested_fractions.append(requested / 256)
        achieved.append(generator(requested).sum().item() / 256)
    requested_t, achieved_t = torch.tensor(requested_fractions), torch.tensor(achieved)
    assert (requested_t - achieved_t).mean() < 0.005  # on average within half a percent
    assert (requested_t - achieved_t).max() < 0.05  # and never far short
    # The achieved fraction follows the sampled ratio (not a constant).
    assert torch.corrcoef(torch.stack([requested_t, achieved_t]))[0, 1] > 0.99


def test_zero_request_is_empty_and_seed_reproducible():
    assert not _generator()(0).any()
    assert torch.equal(_generator(seed=5)(60), _generator(seed=5)(60))
    assert not torch.equal(_generator(seed=5)(60), _generator(seed=6)(60))


def test_each_rectangle_has_area_and_aspect_in_range():
    generator = MaskingGenerator((14, 14), rng=random.Random(0))
    aspects = []
    for _ in range(300):
        mask = torch.zeros(14, 14, dtype=torch.bool)
        added = generator._add_block(mask, max_mask_patches=40)
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        height = (rows.max() - rows.min() + 1).item()
        width = (cols.max() - cols.min() + 1).item()
        assert added == mask.sum() == height * width  # one solid rectangle
        assert 1 <= added <= 40
        aspects.append(height / width)
        # log-uniform aspect in [0.3, 1/0.3], before rounding the sides to integers
        assert 0.3 / 2 <= height / width <= 2 / 0.3
    assert min(aspects) < 0.6 and max(aspects) > 1 / 0.6  # both orientations occur


def test_invalid_aspect_is_rejected():
    with pytest.raises(ValueError, match="min_aspect"):
        MaskingGenerator(8, min_aspect=0)
