"""Face detectors that ship inside registry packages (no weights are downloaded at run time).

* ``dlib_hog``: dlib's frontal-face detector (HOG features + linear SVM, built into the library),
  from the ``dlib-bin`` wheel (prebuilt; Boost Software License; 4.2 MB). The default: on the
  labelled real photographs of ``benchmarks/bench_safety.py`` it finds more faces than the Haar
  cascade at the same (zero) false positives on photographs without people.
* ``haar``: OpenCV's ``haarcascade_frontalface_default.xml`` (in every opencv wheel; BSD/Apache).

Considered and left out: dlib's CNN detector (its weights ship only in the 100 MB
``face-recognition-models`` sdist), ``mediapipe`` (its 1.x wheel ships no face model file and
depends on ``opencv-contrib-python``, which clashes with the headless OpenCV we use), ``dlib`` from
source (a C++ build of many minutes on CI), ``facenet-pytorch`` (pins torch < 2.3 and needs
torchvision), and ``mtcnn`` (MIT, weights in the wheel, but its networks are Keras models: a port
to torch is future work).

A detector takes an RGB ``uint8 [H, W, 3]`` array and returns ``(left, top, right, bottom)``
boxes in pixels, clipped to the image.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from curation.config import ConfigError

FaceDetectorName = Literal["dlib_hog", "haar"]
HAAR_FILE = "haarcascade_frontalface_default.xml"
Box = tuple[int, int, int, int]


class FaceDetectorUnavailable(ConfigError):
    """The detector's package is not installed; the message names it."""


class HaarDetector:
    """OpenCV's frontal-face Haar cascade."""

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 20):
        import cv2

        path = f"{cv2.data.haarcascades}{HAAR_FILE}"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise FaceDetectorUnavailable(f"OpenCV's face cascade {path} could not be loaded")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self._cv2 = cv2

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        gray = self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2GRAY)
        found = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return [(x, y, x + w, y + h) for x, y, w, h in np.asarray(found).reshape(-1, 4).tolist()]


class DlibHogDetector:
    """dlib's HOG frontal-face detector. It finds faces of about 80 px and up; ``upsample`` doubles
    the image that many times first (finding faces down to ~40 px at 4x the cost)."""

    def __init__(self, upsample: int = 0, threshold: float = 0.0):
        try:
            import dlib
        except ImportError as exc:
            raise FaceDetectorUnavailable(
                "the dlib_hog face detector needs dlib: pip install 'lvd[safety]' (dlib-bin), "
                "or set ingest.face_blur.detector=haar"
            ) from exc
        self.detector = dlib.get_frontal_face_detector()
        self.upsample, self.threshold = upsample, threshold

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        rects, _, _ = self.detector.run(np.ascontiguousarray(rgb), self.upsample, self.threshold)
        h, w = rgb.shape[:2]
        return [
            (max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()))
            for r in rects
        ]


def load_face_detector(name: str, **options) -> HaarDetector | DlibHogDetector:
    if name == "haar":
        return HaarDetector(**options)
    if name == "dlib_hog":
        return DlibHogDetector(**options)
    raise ConfigError(f"unknown face detector {name!r}; expected dlib_hog or haar")


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
