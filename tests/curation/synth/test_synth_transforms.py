from __future__ import annotations

import numpy as np
import pytest

from curation.synth.images import render_image
from curation.synth.transforms import (
    NEAR_DUPLICATE_TRANSFORMS,
    NEAR_EXACT_TRANSFORMS,
    TRANSFORMS,
    apply_transform,
)


@pytest.fixture(scope="module")
def image():
    return render_image(np.random.default_rng(0), 3, (180, 140))


def test_registry_names() -> None:
    assert {"exact", "crop", "hflip", "text", "pad", "jitter"} <= set(TRANSFORMS)
    assert any(name.startswith("jpeg_q") for name in TRANSFORMS)
    assert any(name.startswith("resize_") for name in TRANSFORMS)
    assert "exact" not in NEAR_DUPLICATE_TRANSFORMS
    assert set(NEAR_EXACT_TRANSFORMS) <= set(TRANSFORMS)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_is_deterministic_rgb(image, name: str) -> None:
    a = apply_transform(name, image, np.random.default_rng(1))
    b = apply_transform(name, image, np.random.default_rng(1))
    assert a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    if name == "exact":
        assert a.tobytes() == image.tobytes()
    else:
        assert a.size != image.size or a.tobytes() != image.tobytes()


def test_transform_geometry(image) -> None:
    rng = np.random.default_rng(2)
    assert apply_transform("resize_0.8", image, rng).size == (144, 112)
    cropped = apply_transform("crop", image, rng)
    assert cropped.width < image.width and cropped.height < image.height
    padded = apply_transform("pad", image, rng)
    assert padded.width > image.width and padded.height > image.height
    flipped = apply_transform("hflip", image, rng)
    assert np.array_equal(np.asarray(flipped), np.asarray(image)[:, ::-1])


def test_unknown_transform() -> None:
    with pytest.raises(ValueError, match="unknown copy transform"):
        apply_transform("rotate", render_image(np.random.default_rng(0), 0, (32, 32)), None)
