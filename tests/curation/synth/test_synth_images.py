from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from curation.synth.images import MAX_CLASSES, class_recipe, render_image


def test_render_is_deterministic_and_sized() -> None:
    a = render_image(np.random.default_rng(3), 4, (200, 120))
    b = render_image(np.random.default_rng(3), 4, (200, 120))
    c = render_image(np.random.default_rng(4), 4, (200, 120))
    assert a.mode == "RGB" and a.size == (200, 120)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_recipes_are_distinct() -> None:
    first_ten = [class_recipe(c) for c in range(10)]
    assert len({r.shape for r in first_ten}) == 10
    assert len({r.texture for r in first_ten}) == 10
    every = [(r.shape, r.texture) for r in map(class_recipe, range(MAX_CLASSES))]
    assert len(set(every)) == MAX_CLASSES
    with pytest.raises(ValueError, match="class_id"):
        class_recipe(MAX_CLASSES)
    with pytest.raises(ValueError, match="at least 16"):
        render_image(np.random.default_rng(0), 0, (8, 64))


def mean_colour(img: np.ndarray) -> np.ndarray:
    return img.reshape(-1, 3).mean(0)


def texture_colour_features(img: np.ndarray) -> np.ndarray:
    """A small hand-made descriptor: hue histogram of textured (high-gradient, saturated) pixels,
    a rotation-invariant gradient-orientation histogram, a gradient-magnitude histogram, a radial
    power spectrum and 8-neighbour local binary patterns."""
    rgb = img.astype(np.float32) / 255.0
    grey = rgb.mean(2)
    gx = np.diff(grey, axis=1)[:-1]
    gy = np.diff(grey, axis=0)[:, :-1]
    magnitude = np.hypot(gx, gy)
    orientation = np.arctan2(gy, gx) % np.pi

    hsv = np.asarray(Image.fromarray(img).convert("HSV"), dtype=np.float32)[:-1, :-1] / 255.0
    hue_hist = np.histogram(hsv[..., 0], 18, (0, 1), weights=magnitude * hsv[..., 1])[0]
    orient_hist = np.histogram(orientation, 12, (0, np.pi), weights=magnitude)[0]
    orient_hist = np.sort(orient_hist)  # rotation invariant: shapes and textures turn freely
    mag_hist = np.histogram(magnitude, 8, (0.02, 0.5))[0] / magnitude.size

    small = np.asarray(Image.fromarray(img).convert("L").resize((64, 64)), dtype=np.float32)
    power = np.abs(np.fft.fft2(small - small.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
    radius = np.hypot(fx, fy)
    edges = np.linspace(0, 0.5, 11)
    spectrum = [power[(radius >= lo) & (radius < hi)].sum() for lo, hi in zip(edges, edges[1:])]

    centre = grey[1:-1, 1:-1]
    code = np.zeros(centre.shape, np.int32)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    h, w = grey.shape
    for bit, (dy, dx) in enumerate(offsets):
        neighbour = grey[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
        code |= (neighbour > centre + 0.02).astype(np.int32) << bit
    lbp = np.bincount(code.ravel(), minlength=256) / code.size
    return np.concatenate(
        [
            hue_hist / (hue_hist.sum() + 1e-9),
            orient_hist / (orient_hist.sum() + 1e-9),
            mag_hist,
            np.log(np.asarray(spectrum) + 1e-6),
            lbp,
        ]
    )


def probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5))
    return float(model.fit(x_train, y_train).score(x_test, y_test))


def test_classes_need_more_than_mean_colour(default_web) -> None:
    """Mean colour alone is a poor classifier; texture and colour-of-texture statistics separate
    the classes, so they are learnable (measured on the 2,000 pool originals as served)."""
    web = default_web
    rows = [r for r in web.read("pool").to_pylist() if r["kind"] == "original"]
    labels = np.array([r["class_id"] for r in rows])
    images = []
    for row in rows:
        with Image.open(web.root / row["file"]) as img:
            images.append(np.asarray(img.convert("RGB")))
    by_mean = probe_accuracy(np.stack([mean_colour(a) for a in images]), labels)
    by_texture = probe_accuracy(np.stack([texture_colour_features(a) for a in images]), labels)
    n_classes = web.config.n_classes
    assert by_mean < 0.6, f"mean colour alone reaches {by_mean:.2f} on {n_classes} classes"
    assert by_texture > 0.8, f"texture+colour features reach only {by_texture:.2f}"
    assert by_texture - by_mean > 0.3
