"""Face blurring, as LVD-142M did for identifiable faces (DINOv2 paper, appendix on data).

OpenCV's frontal-face Haar cascade (shipped in the opencv package img2dataset installs) finds
faces; each box, grown by a margin, is replaced by a Gaussian blur strong enough that the face is
no longer identifiable. Off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceBlurConfig:
    enabled: bool = False
    scale_factor: float = 1.1  # detectMultiScale's pyramid step
    min_neighbors: int = 5  # higher: fewer, surer detections
    min_face_size: int = 20  # pixels
    margin: float = 0.15  # grow each box by this fraction of its side on every edge
    blur_radius: float = 0.25  # Gaussian radius as a fraction of the box's longer side
    jpeg_quality: int = 95  # blurred images are stored as JPEG


def face_boxes(
    detector, image: Image.Image, config: FaceBlurConfig
) -> list[tuple[int, int, int, int]]:
    """``(left, top, right, bottom)`` of each face found in ``image`` (RGB)."""
    gray = np.asarray(image.convert("L"))
    found = detector.detectMultiScale(
        gray,
        scaleFactor=config.scale_factor,
        minNeighbors=config.min_neighbors,
        minSize=(config.min_face_size, config.min_face_size),
    )
    boxes = []
    for x, y, w, h in np.asarray(found, dtype=np.int64).reshape(-1, 4).tolist():
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
    image: Image.Image, boxes: list[tuple[int, int, int, int]], radius_fraction: float
) -> Image.Image:
    """A copy of ``image`` with each box Gaussian-blurred (pixels outside every box unchanged)."""
    out = image.copy()
    for left, top, right, bottom in boxes:
        if right <= left or bottom <= top:
            continue
        region = out.crop((left, top, right, bottom))
        radius = max(2.0, radius_fraction * max(right - left, bottom - top))
        out.paste(region.filter(ImageFilter.GaussianBlur(radius)), (left, top))
    return out


class FaceBlurrer:
    """Loads the cascade once (per worker), then blurs the faces of one image at a time."""

    def __init__(self, config: FaceBlurConfig):
        self.config = config
        self.detector = None

    def setup(self) -> None:
        import cv2

        path = f"{cv2.data.haarcascades}{CASCADE_FILE}"
        self.detector = cv2.CascadeClassifier(path)
        if self.detector.empty():
            raise FileNotFoundError(f"OpenCV's face cascade {path} could not be loaded")

    def __call__(self, image: Image.Image) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
        """(the image with its faces blurred, the blurred boxes); the same image if none."""
        boxes = face_boxes(self.detector, image, self.config)
        if not boxes:
            return image, []
        return blur_boxes(image, boxes, self.config.blur_radius), boxes
