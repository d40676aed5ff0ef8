"""The training batch's photometric augmentations run once per crop kind on the whole batch,
with each image's own draws: the same distribution as per-image calls, far fewer operations."""

from __future__ import annotations

import torch

from pretrain.data.augmentations import MultiCropAugmentation, MultiCropConfig, normalize
from pretrain.data.batches import TrainingBatchMaker, photometric_per_batch

SMALL = dict(global_crops_size=32, local_crops_size=16, local_crops_number=2)


def identical_views(n: int, seed: int = 0):
    """``n`` copies of one image's uint8 (global crops, local crops)."""
    g = torch.Generator().manual_seed(seed)
    crop = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
    local = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=g)
    return [([crop, crop.flip(-1)], [local, local]) for _ in range(n)]


def test_every_image_gets_its_own_draws():
    augment = MultiCropAugmentation(
        MultiCropConfig(**SMALL), generator=torch.Generator().manual_seed(1)
    )
    samples = photometric_per_batch(augment, identical_views(12))
    firsts = torch.stack([s["global_crops"][0] for s in samples])
    locals_ = torch.stack([c for s in samples for c in s["local_crops"]])
    assert firsts.dtype == torch.float32 and firsts.shape == (12, 3, 32, 32)
    assert locals_.shape == (24, 3, 16, 16)
    distinct = {tuple(x.flatten()[:64].tolist()) for x in firsts}
    assert len(distinct) >= 10  # the same crop, jittered/blurred differently per image
    assert all(s["global_crops_teacher"] is s["global_crops"] for s in samples)


def test_without_photometric_draws_the_crops_are_only_normalised():
    config = MultiCropConfig(
        **SMALL,
        color_jitter_probability=0.0,
        grayscale_probability=0.0,
        blur_probabilities="official",  # global1 0.0 ...
        solarize_probability=0.0,
    )
    augment = MultiCropAugmentation(config, generator=torch.Generator().manual_seed(2))
    views = identical_views(5)
    samples = photometric_per_batch(augment, views)
    for (globals_, _), sample in zip(views, samples):
        expected = normalize(globals_[0].unsqueeze(0).float() / 255.0).squeeze(0)
        torch.testing.assert_close(sample["global_crops"][0], expected)


def test_batches_match_the_per_image_distribution():
    """Mean and spread of the batched path equal the per-image path's over many draws."""
    torch.manual_seed(0)
    views = identical_views(16, seed=3)
    config = MultiCropConfig(**SMALL)

    def per_image(seed):
        augment = MultiCropAugmentation(config, generator=torch.Generator().manual_seed(seed))
        return torch.stack([augment.photometric(g[1].unsqueeze(0), "global2")[0] for g, _ in views])

    def batched(seed):
        augment = MultiCropAugmentation(config, generator=torch.Generator().manual_seed(seed))
        return torch.stack([s["global_crops"][1] for s in photometric_per_batch(augment, views)])

    a = torch.cat([per_image(s) for s in range(30)])
    b = torch.cat([batched(s) for s in range(30)])
    assert abs(a.mean() - b.mean()) < 0.05
    assert abs(a.std() - b.std()) < 0.05
    # solarisation (global2 only, p = 0.2): the share of inverted bright pixels agrees
    assert abs((a < -1.5).float().mean() - (b < -1.5).float().mean()) < 0.03


def test_batch_maker_is_deterministic_for_a_seed():
    images = [torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8) for _ in range(4)]
    maker = TrainingBatchMaker(MultiCropConfig(**SMALL), patch_size=8)
    one, two = maker(images, list("abcd"), seed=5), maker(images, list("abcd"), seed=5)
    torch.testing.assert_close(one["collated_global_crops"], two["collated_global_crops"])
    torch.testing.assert_close(one["collated_local_crops"], two["collated_local_crops"])
    other = maker(images, list("abcd"), seed=6)
    assert not torch.equal(one["collated_global_crops"], other["collated_global_crops"])
