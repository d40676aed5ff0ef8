"""Copy-like augmentations: deterministic per seed, fixed size, every operation exercised."""

import numpy as np
from PIL import Image

from curation.train_descriptor.augment import AugmentConfig, CopyAugment


def image(seed=0, size=(120, 80)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_views_are_deterministic_per_seed_and_differ_across_seeds():
    augment = CopyAugment(AugmentConfig(size=48))
    a = augment(image(), np.random.default_rng(1))
    b = augment(image(), np.random.default_rng(1))
    c = augment(image(), np.random.default_rng(2))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_every_operation_runs_on_tiny_and_odd_images():
    always = AugmentConfig(
        size=32,
        p_flip=1,
        p_pad=1,
        p_jitter=1,
        p_grayscale=1,
        p_blur=1,
        p_text=1,
        p_emoji=1,
        p_jpeg=1,
    )
    augment = CopyAugment(always)
    for seed, size in enumerate([(8, 8), (300, 20), (64, 64)]):
        out = augment(image(seed, size), np.random.default_rng(seed))
        assert out.shape == (32, 32, 3)
