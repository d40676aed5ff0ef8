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


def test_real_copy_edits_run_when_switched_on_and_change_the_view():
    base = AugmentConfig(size=48, p_jitter=0, p_grayscale=0, p_blur=0, p_text=0, p_jpeg=0)
    edits = ("p_rotate", "p_perspective", "p_pixelate", "p_frame", "p_underlay")
    other = Image.new("RGB", (90, 70), (0, 255, 0))
    plain = CopyAugment(base)(image(3), np.random.default_rng(5), other)
    for edit in edits:
        config = AugmentConfig(**{**base.__dict__, edit: 1.0})
        out = CopyAugment(config)(image(3), np.random.default_rng(5), other)
        assert out.shape == (48, 48, 3) and out.dtype == np.uint8
        assert not np.array_equal(out, plain), edit


def test_underlay_puts_the_view_on_the_other_image():
    config = AugmentConfig(size=64, p_flip=0, p_pad=0, p_jitter=0, p_grayscale=0, p_blur=0)
    config = AugmentConfig(**{**config.__dict__, "p_text": 0, "p_emoji": 0, "p_jpeg": 0})
    config = AugmentConfig(**{**config.__dict__, "p_underlay": 1.0})
    green = Image.new("RGB", (90, 70), (0, 255, 0))
    red = Image.new("RGB", (100, 100), (255, 0, 0))
    out = CopyAugment(config)(red, np.random.default_rng(0), green).reshape(-1, 3)
    is_red = np.all(out == (255, 0, 0), axis=1).mean()
    is_green = np.all(out == (0, 255, 0), axis=1).mean()
    assert 0.1 < is_red < 0.7 and is_green > 0.3 and is_red + is_green > 0.95
    # no other image (or the edit off): the view is the image alone
    alone = CopyAugment(config)(red, np.random.default_rng(0), None).reshape(-1, 3)
    assert np.all(alone == (255, 0, 0))
