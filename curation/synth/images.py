"""Procedural image classes for the synthetic web.

Each class is a *recipe*: a shape family, a fill texture with a class-specific frequency range, and a
typical (but overlapping) hue. Every image draws its own shape count, positions, scales, rotations,
texture frequencies and orientations, colours and background, so classes vary strongly inside and
are not separable by mean colour alone (the background, drawn from every hue, dominates the mean).
All pixel work is vectorised numpy; shape masks are rasterised by PIL's C polygon filler.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = (
    "disc",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "hexagon",
    "crescent",
    "blob",
    "arrow",
)
TEXTURES = (
    "stripes",
    "checker",
    "dots",
    "rings",
    "waves",
    "grid",
    "blotches",
    "gradient",
    "speckle",
    "solid",
)
BACKGROUNDS = ("solid", "linear", "radial")

# Texture periods in pixels; each texture kind gets its own range so frequency is part of the class.
_PERIODS = {
    "stripes": (6.0, 14.0),
    "checker": (10.0, 22.0),
    "dots": (9.0, 16.0),
    "rings": (7.0, 16.0),
    "waves": (12.0, 26.0),
    "grid": (10.0, 20.0),
    "blotches": (18.0, 40.0),
    "gradient": (20.0, 40.0),
    "speckle": (2.0, 4.0),
    "solid": (1.0, 1.0),
}
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class ClassRecipe:
    """What makes a class: its shape family, fill texture and typical hue."""

    class_id: int
    shape: str
    texture: str
    hue: float  # centre of the class's foreground hue band, in [0, 1)
    period_range: tuple[float, float]  # texture period in pixels

    @property
    def name(self) -> str:
        return f"{self.texture}-{self.shape}"


def class_recipe(class_id: int) -> ClassRecipe:
    """The recipe of ``class_id``. Classes 0..9 differ in both shape and texture; up to 100 differ
    in at least one of them (the texture index is rotated by a different offset every ten classes)."""
    if not 0 <= class_id < MAX_CLASSES:
        raise ValueError(f"class_id must be in [0, {MAX_CLASSES}), got {class_id}")
    n = len(SHAPES)
    shape = SHAPES[class_id % n]
    texture = TEXTURES[(class_id + 3 * (class_id // n)) % len(TEXTURES)]
    return ClassRecipe(
        class_id=class_id,
        shape=shape,
        texture=texture,
        hue=_class_hue(class_id),
        period_range=_PERIODS[texture],
    )


def _class_hue(class_id: int) -> float:
    # Ten evenly spaced hue bands; each further block of ten is offset by a golden-ratio step so
    # classes that share a shape family do not also share a hue.
    block, index = divmod(class_id, 10)
    return (index / 10.0 + block * _GOLDEN / 10.0) % 1.0


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    return xs, ys


def _rotated(
    xs: np.ndarray, ys: np.ndarray, angle: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    return dx * c + dy * s, -dx * s + dy * c


def _smooth_noise(rng: np.random.Generator, width: int, height: int, period: float) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically."""
    gw = max(2, int(round(width / period)) + 2)
    gh = max(2, int(round(height / period)) + 2)
    coarse = (rng.random((gh, gw), dtype=np.float32) * 255.0).astype(np.uint8)
    up = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 255.0


def _texture(
    rng: np.random.Generator, kind: str, width: int, height: int, period_range: tuple[float, float]
) -> np.ndarray:
    """A (height, width) float32 mixing weight in [0, 1] between the two fill colours."""
    xs, ys = _grid(width, height)
    period = float(rng.uniform(*period_range))
    angle = float(rng.uniform(0.0, math.pi))
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    u, v = _rotated(xs, ys, angle, cx, cy)
    f = 1.0 / period
    if kind == "stripes":
        duty = rng.uniform(0.3, 0.7)
        return ((u * f) % 1.0 < duty).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u * f) + np.floor(v * f)) % 2.0).astype(np.float32)
    if kind == "dots":
        radius = rng.uniform(0.18, 0.32)
        du, dv = (u * f) % 1.0 - 0.5, (v * f) % 1.0 - 0.5
        return (du * du + dv * dv < radius * radius).astype(np.float32)
    if kind == "rings":
        r = np.sqrt(u * u + v * v)
        return (np.sin(2.0 * math.pi * f * r) > 0).astype(np.float32)
    if kind == "waves":
        amp = rng.uniform(0.3, 0.8) * period
        wobble = rng.uniform(1.5, 3.0) * period
        return 0.5 + 0.5 * np.sin(
            2.0 * math.pi * f * (u + amp * np.sin(2.0 * math.pi * v / wobble))
        )
    if kind == "grid":
        width_frac = rng.uniform(0.12, 0.25)
        line_u = np.abs((u * f) % 1.0 - 0.5) < width_frac / 2.0
        line_v = np.abs((v * f) % 1.0 - 0.5) < width_frac / 2.0
        return (line_u | line_v).astype(np.float32)
    if kind == "blotches":
        return (_smooth_noise(rng, width, height, period) > 0.5).astype(np.float32)
    if kind == "gradient":
        # Repeating ramps (a sawtooth): smooth one way, a hard edge the other.
        return (u * f) % 1.0
    if kind == "speckle":
        block = max(1, int(round(period)))
        small = rng.random(((height + block - 1) // block, (width + block - 1) // block)) < 0.5
        full = np.repeat(np.repeat(small, block, axis=0), block, axis=1)
        return full[:height, :width].astype(np.float32)
    if kind == "solid":
        # Flat fill with a soft shading so it is not a single colour.
        return np.clip(0.5 + (u / max(width, height)) * 0.6, 0.0, 1.0) * 0.35
    raise ValueError(f"unknown texture kind {kind!r}")


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(n) * (2.0 * math.pi / n)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _shape_polygons(rng: np.random.Generator, shape: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit-scale outline (N, 2) and an optional hole/cut-out outline, centred on the origin."""
    if shape == "disc":
        pts = _regular(48)
        pts[:, 1] *= rng.uniform(0.7, 1.0)
        return pts, None
    if shape == "ring":
        pts = _regular(48)
        return pts, pts * rng.uniform(0.45, 0.65)
    if shape == "square":
        a = rng.uniform(0.6, 1.0)
        return np.array([[-1, -a], [1, -a], [1, a], [-1, a]], dtype=np.float64) * 0.85, None
    if shape == "triangle":
        pts = _regular(3, -math.pi / 2)
        pts[:, 0] *= rng.uniform(0.8, 1.2)
        return pts, None
    if shape == "star":
        n = int(rng.integers(5, 8))
        inner = rng.uniform(0.38, 0.55)
        pts = _regular(2 * n)
        pts[1::2] *= inner
        return pts, None
    if shape == "cross":
        w = rng.uniform(0.28, 0.42)
        pts = [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w]]
        pts += [[-1, w], [-1, -w], [-w, -w]]
        return np.array(pts, dtype=np.float64), None
    if shape == "hexagon":
        return _regular(6), None
    if shape == "crescent":
        pts = _regular(48)
        shift = rng.uniform(0.35, 0.6)
        return pts, pts * rng.uniform(0.85, 1.0) + np.array([shift, 0.0])
    if shape == "blob":
        t = np.arange(48) * (2.0 * math.pi / 48)
        r = np.ones_like(t)
        for k in (2, 3, 4):
            r += rng.uniform(0.05, 0.2) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1) * 0.85, None
    if shape == "arrow":
        w, head = rng.uniform(0.18, 0.3), rng.uniform(0.5, 0.7)
        pts = [[-1, -w], [0.1, -w], [0.1, -head], [1, 0], [0.1, head], [0.1, w], [-1, w]]
        return np.array(pts, dtype=np.float64), None
    raise ValueError(f"unknown shape family {shape!r}")


def _place(pts: np.ndarray, scale: float, angle: float, cx: float, cy: float) -> list[tuple]:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    placed = (pts * scale) @ rot.T + np.array([cx, cy])
    return [tuple(p) for p in placed.tolist()]


def _shape_mask(
    rng: np.random.Generator,
    shape: str,
    width: int,
    height: int,
    min_side: int,
    scale_range: tuple[float, float] = (0.22, 0.45),
) -> np.ndarray:
    outline, hole = _shape_polygons(rng, shape)
    scale = float(rng.uniform(*scale_range)) * min_side
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    cx = float(rng.uniform(0.15, 0.85)) * width
    cy = float(rng.uniform(0.15, 0.85)) * height
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon(_place(outline, scale, angle, cx, cy), fill=255)
    if hole is not None:
        draw.polygon(_place(hole, scale, angle, cx, cy), fill=0)
    return np.asarray(canvas) > 0


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An (h, w, 3) float32 background of a random kind and random (any-hue) colours, always with
    a soft blotch layer so that no two backgrounds share their coarse layout by accident."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    c0 = _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
    xs, ys = _grid(width, height)
    if kind == "solid":
        t = np.zeros((height, width), dtype=np.float32)
    elif kind == "linear":
        u, _ = _rotated(xs, ys, float(rng.uniform(0, 2 * math.pi)), width / 2, height / 2)
        t = np.clip(u / max(width, height) + 0.5, 0.0, 1.0)
    else:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.clip(np.hypot(xs - cx, ys - cy) / max(width, height), 0.0, 1.0)
    img = c0 * (1.0 - t[..., None]) + c1 * t[..., None]
    c2 = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.1, 1.0))
    blotch = _smooth_noise(rng, width, height, float(rng.uniform(25, 70)))[..., None]
    blotch = blotch * float(rng.uniform(0.3, 0.7))
    return img * (1.0 - blotch) + c2 * blotch


def _distractors(rng: np.random.Generator, img: np.ndarray, min_side: int) -> np.ndarray:
    """Up to three small flat shapes of any family and colour: clutter that is not class evidence."""
    height, width = img.shape[:2]
    for _ in range(int(rng.integers(0, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        mask = _shape_mask(rng, shape, width, height, min_side, scale_range=(0.06, 0.15))
        colour = _hsv(rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0))
        img = np.where(mask[..., None], colour, img)
    return img


def render_image(rng: np.random.Generator, class_id: int, size: tuple[int, int]) -> Image.Image:
    """Render one RGB image of ``class_id`` at ``size`` = (width, height), drawing every random
    choice from ``rng`` (so the same generator state gives the same pixels)."""
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    recipe = class_recipe(class_id)
    min_side = min(width, height)
    img = _distractors(rng, _background(rng, width, height), min_side)

    # Class-typical fill colours: a hue band around the class hue, wide enough to overlap neighbours.
    hue = recipe.hue + rng.normal(0.0, 0.035)
    colour_a = _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0))
    colour_b = _hsv(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.3, 1.0), rng.uniform(0.1, 0.45))
    if rng.random() < 0.5:
        colour_a, colour_b = colour_b, colour_a

    n_shapes = int(rng.integers(1, 4))
    for _ in range(n_shapes):
        mask = _shape_mask(rng, recipe.shape, width, height, min_side)
        weight = _texture(rng, recipe.texture, width, height, recipe.period_range)[..., None]
        fill = colour_a * (1.0 - weight) + colour_b * weight
        img = np.where(mask[..., None], fill, img)

    # Sensor-like noise makes every image unique at the pixel level.
    sigma = float(rng.uniform(1.0, 6.0))
    img = img + rng.standard_normal((height, width, 3), dtype=np.float32) * sigma
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
