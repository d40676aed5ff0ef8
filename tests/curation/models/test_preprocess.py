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


# ---------------------------------------------------------------- values against an independent
# reference: Pillow's resize with the filter each recipe names, the crop and the ImageNet formula
# written out here. Normalised values agree to 1e-5 (the code works in float32, the reference in
# float64); resized pixels must be identical (same Pillow call), so any shift of a pixel shows.
def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def reference_normalised(pixels: np.ndarray) -> np.ndarray:
    """``(x / 255 - mean) / std`` per channel in float64, as ``[3, H, W]``."""
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    return ((pixels.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)


def nearest(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to the nearest integer (test sizes avoid exact halves)."""
    assert (2 * numerator) % (2 * denominator) != denominator, "a tie: pick another test size"
    return (2 * numerator + denominator) // (2 * denominator)


def pipeline_values(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    pixels = torch.from_numpy(image_to_uint8(image, prep).copy())[None]
    return normalize_batch(pixels, prep, channels_last=False)[0].double().numpy()


@pytest.mark.parametrize(("width", "height"), [(301, 457), (457, 301), (160, 90)])
def test_square_values_match_pillow_bilinear_and_imagenet_formula(width, height):
    image = noise_image(width, height)
    out = pipeline_values(image, Preprocessing(320, "square"))
    resized = np.asarray(image.resize((320, 320), Image.Resampling.BILINEAR))
    assert out.shape == (3, 320, 320)
    np.testing.assert_allclose(out, reference_normalised(resized), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("width", "height", "expected_size"),
    [
        # short side -> 288, long side scaled by the same factor and rounded to the nearest pixel
        (301, 457, (288, 437)),  # 457 * 288 / 301 = 437.26
        (457, 301, (437, 288)),
        (300, 457, (288, 439)),  # 457 * 288 / 300 = 438.72: rounded, not truncated
        (288, 500, (288, 500)),  # already the right size
        (1001, 333, (866, 288)),  # upscaled short side; 1001 * 288 / 333 = 865.7
    ],
)
def test_short_side_values_and_size_arithmetic(width, height, expected_size):
    short, long = min(width, height), max(width, height)
    new_long = nearest(long * 288, short)
    computed = (288, new_long) if width < height else (new_long, 288)
    assert computed == expected_size  # the table above and the arithmetic agree
    image = noise_image(width, height, seed=1)
    out = pipeline_values(image, Preprocessing(288, "short_side"))
    resized = np.asarray(image.resize(expected_size, Image.Resampling.BILINEAR))
    assert out.shape == (3, expected_size[1], expected_size[0])
    np.testing.assert_allclose(out, reference_normalised(resized), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("width", "height", "resized_size", "offset"),
    [
        # short side -> round(224 * 8 / 7) = 256, then the centred 224 square; an odd margin puts
        # the extra pixel after the crop (offset = floor(margin / 2))
        (301, 457, (256, 389), (16, 82)),  # 457 * 256 / 301 = 388.7; margin 165
        (457, 301, (389, 256), (82, 16)),
        (400, 300, (341, 256), (58, 16)),  # 400 * 256 / 300 = 341.3; margin 117
        (256, 256, (256, 256), (16, 16)),
    ],
)
def test_center_crop_values_match_bicubic_resize_then_centred_crop(
    width, height, resized_size, offset
):
    image = noise_image(width, height, seed=2)
    out = pipeline_values(image, Preprocessing(224, "center_crop"))
    resized = np.asarray(image.resize(resized_size, Image.Resampling.BICUBIC))
    left, top = offset
    assert left == (resized_size[0] - 224) // 2 and top == (resized_size[1] - 224) // 2
    crop = resized[top : top + 224, left : left + 224]
    assert out.shape == (3, 224, 224)
    np.testing.assert_allclose(out, reference_normalised(crop), rtol=0, atol=1e-5)


def test_patch_multiple_rounds_each_side_to_the_nearest_multiple():
    image = noise_image(301, 457, seed=3)
    # short side 100 -> 98 (7 patches of 14); long 457 * 100 / 301 = 151.8 -> 154 (11 patches)
    prep = Preprocessing(100, "short_side", multiple_of=14)
    out = pipeline_values(image, prep)
    resized = np.asarray(image.resize((98, 154), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(out, reference_normalised(resized), rtol=0, atol=1e-5)
    square = pipeline_values(image, Preprocessing(100, "square", multiple_of=14))
    resized = np.asarray(image.resize((98, 98), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(square, reference_normalised(resized), rtol=0, atol=1e-5)
