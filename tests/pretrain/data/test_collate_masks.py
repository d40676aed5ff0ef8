import random

import torch

from pretrain.data import MaskingGenerator, collate_data_and_masks


def _sample(index, n_local=3):
    # Each crop is filled with a code: 100 * sample + 10 * kind + crop number.
    return (
        {
            "global_crops": [torch.full((3, 4, 4), 100.0 * index + g) for g in range(2)],
            "local_crops": [torch.full((3, 2, 2), 100.0 * index + 10 + j) for j in range(n_local)],
        },
        None,
    )


def _collate(batch_size=4, seed=0):
    generator = MaskingGenerator((4, 4), max_num_patches=8, rng=random.Random(seed))
    return collate_data_and_masks(
        [_sample(i) for i in range(batch_size)],
        mask_ratio_tuple=(0.1, 0.5),
        mask_probability=0.5,
        dtype=torch.float16,
        n_tokens=16,
        mask_generator=generator,
        rng=random.Random(seed),
    )


def test_crops_are_stacked_crop_major():
    batch = _collate()
    globals_, locals_ = batch["collated_global_crops"], batch["collated_local_crops"]
    assert globals_.shape == (8, 3, 4, 4) and globals_.dtype == torch.float16
    assert [int(x) for x in globals_[:, 0, 0, 0]] == [0, 100, 200, 300, 1, 101, 201, 301]
    assert locals_.shape == (12, 3, 2, 2)
    assert [int(x) for x in locals_[:5, 0, 0, 0]] == [10, 110, 210, 310, 11]


def test_masks_weights_and_indices_are_consistent():
    for seed in range(10):
        batch = _collate(seed=seed)
        masks = batch["collated_masks"]
        assert masks.shape == (8, 16) and masks.dtype == torch.bool
        per_image = masks.sum(dim=1)
        assert (per_image > 0).sum() <= 4  # int(8 * 0.5) images are masked, the rest not
        assert torch.equal(batch["mask_indices_list"], masks.flatten().nonzero().flatten())
        assert batch["n_masked_patches"].tolist() == [int(masks.sum())]
        # Each masked image's weights sum to 1: the iBOT loss counts images, not tokens.
        torch.testing.assert_close(
            batch["masks_weight"].sum(), (per_image > 0).sum().float(), rtol=0, atol=1e-5
        )
        assert int(masks.sum()) <= batch["upperbound"]


def test_mask_ratios_are_stratified_over_the_range():
    generator = MaskingGenerator((14, 14), max_num_patches=98, rng=random.Random(0))
    samples = [_sample(i) for i in range(8)]
    counts = []
    for seed in range(20):
        batch = collate_data_and_masks(
            samples, (0.1, 0.5), 0.5, torch.float32, 196, generator, random.Random(seed)
        )
        counts.append(sorted(batch["collated_masks"].sum(dim=1).tolist())[-8:])
    # 8 masked of 16: the i-th draws from [0.1 + 0.05 i, 0.1 + 0.05 (i + 1)] of 196 patches.
    for counts_of_batch in counts:
        for i, count in enumerate(counts_of_batch):
            assert count <= int(196 * (0.1 + 0.05 * (i + 1)))
    mean_largest = sum(c[-1] for c in counts) / len(counts)
    assert mean_largest > 196 * 0.45 * 0.95
