"""Uniform-border trimming (curation/models/borders.py) on real pictures and on hard cases."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from curation.models.borders import content_box, trim_uniform_borders
from curation.models.preprocess import Preprocessing, image_to_uint8


@pytest.fixture(scope="module")
def photo(require) -> Image.Image:
    require("skimage")
    from curation.eval.real_images import real_pictures

    return Image.fromarray(real_pictures(("astronaut",))[0].image)


def _jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize(
    ("borders", "colour"),
    [
        ((40, 10, 25, 60), (0, 0, 0)),
        ((20, 80, 20, 80), (250, 250, 250)),
        ((60, 0, 0, 0), (0, 200, 90)),
    ],
)
def test_a_padded_jpeg_comes_back_to_its_picture(photo, borders, colour):
    padded = _jpeg(ImageOps.expand(photo, border=borders, fill=colour))
    left, top, right, bottom = content_box(np.asarray(padded))
    # The picture's own box, give or take the JPEG block (16 px with chroma subsampling) the seam
    # rings through; never into the picture.
    expected = (borders[0], borders[1], borders[0] + photo.width, borders[1] + photo.height)
    assert left <= expected[0] and top <= expected[1]
    assert right >= expected[2] and bottom >= expected[3]
    assert np.abs(np.subtract((left, top, right, bottom), expected)).max() <= 16


def test_a_picture_without_borders_is_left_alone(photo):
    assert trim_uniform_borders(photo) is photo


def test_a_large_image_is_trimmed_on_a_reduced_copy_to_within_the_factor(photo):
    big = photo.resize((2048, 2048), Image.Resampling.BILINEAR)
    padded = ImageOps.expand(big, border=(300, 120, 40, 500), fill=(20, 20, 200))
    trimmed = trim_uniform_borders(padded)
    factor = -(-max(padded.size) // 384)
    assert 2048 <= trimmed.width <= 2048 + 2 * factor
    assert 2048 <= trimmed.height <= 2048 + 2 * factor


def test_a_pad_around_a_plain_margin_goes_in_two_rounds():
    inner = np.full((100, 100, 3), 255, np.uint8)  # a white sheet with a drawing in the middle
    inner[30:70, 30:70] = np.random.default_rng(0).integers(0, 256, (40, 40, 3))
    padded = np.pad(inner, ((20, 20), (10, 10), (0, 0)), constant_values=0)
    assert content_box(padded) == (40, 50, 80, 90)


def test_a_nearly_uniform_image_keeps_at_least_a_quarter_of_each_side():
    pixels = np.full((200, 200, 3), 128, np.uint8)
    pixels[100:103, 100:103] = 0  # a dot: trimming to it would keep 1.5% of each side
    assert content_box(pixels) == (0, 0, 200, 200)
    assert content_box(np.full((50, 50, 3), 7, np.uint8)) == (0, 0, 50, 50)


def test_a_smooth_gradient_is_not_a_border():
    ramp = np.linspace(0, 255, 300).astype(np.uint8)
    pixels = np.repeat(np.repeat(ramp[None, :, None], 200, axis=0), 3, axis=2)  # left to right
    left, top, right, bottom = content_box(pixels)
    assert (top, bottom) == (0, 200)  # rows span the whole ramp
    # Only the columns within MEAN_TOLERANCE (3 levels) of each end: the trim does not creep on.
    assert left <= 6 and right >= 294


def test_preprocessing_trims_before_resizing_only_when_asked(photo):
    padded = _jpeg(ImageOps.expand(photo, border=(0, 90, 0, 90), fill=(255, 255, 255)), 90)
    plain = Preprocessing(size=64)
    trimming = Preprocessing(size=64, trim_borders=True)
    reference = image_to_uint8(photo, plain).astype(np.float32)
    trimmed = image_to_uint8(padded, trimming).astype(np.float32)
    untrimmed = image_to_uint8(padded, plain).astype(np.float32)
    assert np.abs(trimmed - reference).mean() < 6  # JPEG and a pixel of seam apart
    assert np.abs(untrimmed - reference).mean() > 30  # squashed and framed
