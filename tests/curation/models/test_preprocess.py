"""Inference preprocessing: resize modes, uint8 -> normalised float on the device, channels-last."""

import numpy as np
import pytest
import torch
from PIL import Image

from curation.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    image_to_uint8,
    normalize_batch,
    rescale_batch,
)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))


def test_square_short_side_and_center_crop_sizes(image):
    assert image_to_uint8(image, Preprocessing(320, "square")).shape == (320, 320, 3)
    assert image_to_uint8(image, Preprocessing(288, "short_side")).shape == (288, 512, 3)
    assert image_to_uint8(image, Preprocessing(224, "center_crop")).shape == (224, 224, 3)
    # ViTs: sides rounded to the patch size
    out = image_to_uint8(image, Preprocessing(100, "short_side", multiple_of=14))
    assert out.shape[0] % 14 == 0 and out.shape[1] % 14 == 0


def test_unknown_resize_mode_is_rejected():
    with pytest.raises(ValueError, match="resize"):
        Preprocessing(224, "stretch")


def test_normalize_batch_matches_imagenet_formula_and_is_channels_last():
    pixels = torch.randint(0, 256, (2, 8, 6, 3), dtype=torch.uint8)
    out = normalize_batch(pixels, Preprocessing(8))
    assert out.shape == (2, 3, 8, 6)
    assert out.is_contiguous(memory_format=torch.channels_last)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (pixels.float() / 255.0 - mean) / std
    assert torch.allclose(out.permute(0, 2, 3, 1), expected, atol=1e-5)


def test_rescale_batch_keeps_layout():
    x = normalize_batch(torch.zeros(1, 16, 16, 3, dtype=torch.uint8), Preprocessing(16))
    assert rescale_batch(x, 8).shape == (1, 3, 8, 8)
    assert rescale_batch(x, 16) is x
