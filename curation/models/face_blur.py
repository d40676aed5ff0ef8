"""Face blurring, as LVD-142M did for identifiable faces (DINOv2 paper, appendix on data).

A detector from :mod:`curation.models.face_detect` (dlib's HOG detector by default, OpenCV's Haar
cascade as the alternative) finds faces; each box, grown by ``margin`` of its side on every edge,
is made unrecognisable by this rule: the region is reduced to ``cells`` blocks along its longer
side (each block the mean of its pixels, so no detail finer than 1/8 of the face survives: face
recognisers need 16 px or more across a face), then Gaussian-blurred with a radius of
``blur_radius`` times its longer side to hide the block edges. Pixels outside every grown box are
unchanged. Off by default in the ingest job (see the README for the measurements behind that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from curation.config import check_choices


@dataclass(frozen=True)
class FaceBlurConfig:
    enabled: bool = False
    detector: Literal["dlib_hog", "haar"] = "dlib_hog"
    upsample: int = 1  # dlib_hog: double the image this many times (1: faces from ~40 px)
    min_score: float = 0.0  # dlib_hog: SVM score threshold (higher: fewer, surer detections)
    max_side: int = 640  # detect on a copy whose longer side is at most this (cost ~ pixels)
    scale_factor: float = 1.1  # haar: detectMultiScale's pyramid step
    min_neighbors: int = 5  # haar: higher gives fewer, surer detections
    min_face_size: int = 20  # haar: pixels
    margin: float = 0.15  # grow each box by this fraction of its side on every edge
    cells: int = 8  # blocks along the grown box's longer side
    blur_radius: float = 0.125  # Gaussian radius after the blocks, as a fraction of the longer side
    jpeg_quality: int = 95  # blurred images are stored as JPEG

    def __post_init__(self) -> None:
        check_choices(self)
        if self.cells < 1 or self.upsample < 0:
            raise ValueError("face_blur.cells must be >= 1 and face_blur.upsample >= 0")

    def detector_options(self) -> dict:
        if self.detector == "haar":
            return {
                "scale_factor": self.scale_factor,
                "min_neighbors": self.min_neighbors,
                "min_size": self.min_face_size,
            }
        return {"upsample": self.upsample, "threshold": self.min_score}


def face_boxes(
    detector, image: Image.Image, config: FaceBlurConfig
) -> list[tuple[int, int, int, int]]:
    """``(left, top, right, bottom)`` of each face found in ``image`` (RGB), grown by the margin."""
    scale = min(1.0, config.max_side / max(image.size))
    small = image.convert("RGB")
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = small.resize(size, Image.Resampling.BILINEAR)
    boxes = []
    for found in detector(np.asarray(small)):
        left, top, right, bottom = (round(v / scale) for v in found)
        x, y, w, h = left, top, right - left, bottom - top
        dx, dy = int(w * config.margin), int(h * config.margin)
        boxes.append(
            (
                max(0, x - dx),
                max(0, y - dy),
                min(image.width, x + w + dx),
                min(image.height, y + h + dy),
            )
        )
    return boxes


def blur_boxes(
    image: Image.Image,
    boxes: list[tuple[int, int, int, int]],
    radius_fraction: float,
    cells: int = 8,
) -> Image.Image:
    """A copy of ``image`` with each box reduced to ``cells`` blocks along its longer side, then
    Gaussian-blurred (pixels outside every box unchanged)."""
    out = image.copy()
    for left, top, right, bottom in boxes:
        if right <= left or bottom <= top:
            continue
        width, height = right - left, bottom - top
        side = max(width, height)
        small = (max(1, round(cells * width / side)), max(1, round(cells * height / side)))
        region = out.crop((left, top, right, bottom))
        region = region.resize(small, Image.Resampling.BOX).resize(
            (width, height), Image.Resampling.NEAREST
        )
        radius = max(2.0, radius_fraction * side)
        out.paste(region.filter(ImageFilter.GaussianBlur(radius)), (left, top))
    return out


class FaceBlurrer:
    """Loads the detector once (per worker), then blurs the faces of one image at a time."""

    def __init__(self, config: FaceBlurConfig):
        self.config = config
        self.detector = None

    def setup(self) -> None:
        from curation.models.face_detect import load_face_detector

        self.detector = load_face_detector(self.config.detector, **self.config.detector_options())

    def __call__(self, image: Image.Image) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
        """(the image with its faces blurred, the blurred boxes); the same image if none."""
        boxes = face_boxes(self.detector, image, self.config)
        if not boxes:
            return image, []
        blurred = blur_boxes(image, boxes, self.config.blur_radius, self.config.cells)
        return blurred, boxes
