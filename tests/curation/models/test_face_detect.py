"""The default face detector on real photographs (package-shipped, labelled by hand), and the blur
rule: a blurred face keeps no detail, every pixel outside its box is untouched."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.eval.real_images import real_pictures
from curation.models.face_blur import FaceBlurConfig, FaceBlurrer, blur_boxes
from curation.models.face_detect import box_iou

ASTRONAUT_FACE = (178, 72, 266, 172)  # scikit-image's astronaut (public domain), by hand


@pytest.fixture(scope="module")
def blurrer(require):
    require("dlib")
    blurrer = FaceBlurrer(FaceBlurConfig(enabled=True))  # the default detector
    blurrer.setup()
    return blurrer


def _lfw_faces(count: int, side: int = 100) -> list[Image.Image]:
    """LFW face crops shipped with scikit-image, each in the middle of a grey canvas."""
    root = Path(next(iter(importlib.util.find_spec("skimage").submodule_search_locations)))
    crops = (np.clip(np.load(root / "data" / "lfw_subset.npy")[:count], 0, 1) * 255).round()
    out = []
    for crop in crops.astype(np.uint8):
        canvas = Image.new("RGB", (3 * side, 3 * side), (128, 128, 128))
        canvas.paste(Image.fromarray(crop).resize((side, side)).convert("RGB"), (side, side))
        out.append(canvas)
    return out


def test_the_default_detector_finds_the_labelled_faces(blurrer):
    astronaut = Image.fromarray(real_pictures(("astronaut",))[0].image)
    _, boxes = blurrer(astronaut)
    assert any(box_iou(box, ASTRONAUT_FACE) >= 0.5 for box in boxes)
    found = 0
    for canvas in _lfw_faces(12):
        _, boxes = blurrer(canvas)
        found += any(box_iou(box, (100, 100, 200, 200)) >= 0.3 for box in boxes)
    assert found >= 10


def test_the_default_detector_finds_no_face_in_pictures_without_people(blurrer):
    for picture in real_pictures(("coffee", "chelsea", "rocket", "china", "flower")):
        image = Image.fromarray(picture.image)
        out, boxes = blurrer(image)
        assert boxes == [] and out is image, picture.name


def test_a_blurred_box_keeps_no_detail_and_nothing_else_changes():
    image = Image.fromarray(real_pictures(("astronaut",))[0].image)
    out = blur_boxes(image, [ASTRONAUT_FACE], radius_fraction=0.125, cells=8)
    before, after = np.asarray(image, np.float32), np.asarray(out, np.float32)
    left, top, right, bottom = ASTRONAUT_FACE
    mask = np.zeros(before.shape[:2], bool)
    mask[top:bottom, left:right] = True
    assert np.array_equal(before[~mask], after[~mask])
    inside_before, inside_after = before[top:bottom, left:right], after[top:bottom, left:right]
    assert np.abs(inside_before - inside_after).mean() > 15
    # detail (pixel-to-pixel differences) is gone: under a tenth of what the face had
    detail = lambda a: np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    assert detail(inside_after) < 0.1 * detail(inside_before)
