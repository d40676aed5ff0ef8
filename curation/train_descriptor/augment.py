"""Strong augmentations for copy-detection training (SSCD, Pizzi et al. 2022, §3.3 and its
"advanced" augmentation set): what a copier does to an image, drawn at random so that two views of
one image look like an original and its edited copy.

Crop (random area and aspect), horizontal flip, padding with a random colour, colour jitter,
grayscale, Gaussian blur, text overlays, emoji-like overlays (a face drawn from primitives; no emoji
font needed) and JPEG re-encoding; and, each off unless its probability is set, the edits real
copies show that SSCD's set lacks (DISC21's AugLy families): rotation, perspective, pixelation,
meme and screenshot frames, and the view pasted onto another training image. Everything is PIL on an image already resized near the target
size, so one view costs well under a millisecond at 64-96 px. Randomness comes only from the
``numpy`` generator passed in, so a view is a pure function of (image, seed).
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from curation.train_descriptor.config import AugmentConfig

_WORDS = ("LOL", "meme", "photo", "sale", "2024", "wow", "news", "#tbt", "hello", "copy", "OK")


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def random_resized_crop(
    img: Image.Image, rng: np.random.Generator, size: int, scale, ratio
) -> Image.Image:
    """Crop a random box of ``scale`` x area and ``ratio`` aspect, resize it to ``size``²."""
    width, height = img.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return img.resize(
                (size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
            )
    return img.resize((size, size), Image.Resampling.BILINEAR)


def pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Borders of up to 25% of the side on each edge in one colour, then back to the same size."""
    side = img.width
    borders = tuple(int(side * rng.uniform(0.0, 0.25)) for _ in range(4))
    padded = ImageOps.expand(img, border=borders, fill=_colour(rng))
    return padded.resize(img.size, Image.Resampling.BILINEAR)


def colour_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.6, 1.4)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.6, 1.4)))
    img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.5, 1.5)))
    hue_shift = int(rng.integers(-12, 13))
    if hue_shift:
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + hue_shift) % 256
        img = Image.fromarray(hsv, "HSV").convert("RGB")
    return img


def text_overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 3))):
        words = " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), rng.integers(1, 3)))
        font_size = max(8, int(img.width * rng.uniform(0.1, 0.25)))
        x = int(rng.integers(-img.width // 4, img.width // 2 + 1))
        y = int(rng.integers(0, max(1, img.height - font_size)))
        colour = _colour(rng)
        draw.text(
            (x, y),
            words,
            fill=colour,
            font=_font(font_size),
            stroke_width=int(rng.integers(0, 2)),
            stroke_fill=tuple(255 - c for c in colour),
        )
    return img


def emoji_overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A smiley-like sticker (disc, two eyes, a mouth) of 15-45% of the side, maybe translucent."""
    side = int(img.width * rng.uniform(0.15, 0.45))
    sticker = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sticker)
    alpha = int(rng.integers(150, 256))
    draw.ellipse((0, 0, side - 1, side - 1), fill=(*_colour(rng), alpha))
    eye = max(1, side // 8)
    ink = (*_colour(rng), alpha)
    for cx in (side * 0.33, side * 0.67):
        draw.ellipse((cx - eye, side * 0.35 - eye, cx + eye, side * 0.35 + eye), fill=ink)
    draw.arc((side * 0.25, side * 0.4, side * 0.75, side * 0.8), 20, 160, fill=ink, width=eye)
    sticker = sticker.rotate(float(rng.uniform(-40, 40)), resample=Image.Resampling.BILINEAR)
    x = int(rng.integers(-side // 3, img.width - side // 2))
    y = int(rng.integers(-side // 3, img.height - side // 2))
    img.paste(sticker, (x, y), sticker)
    return img


def jpeg(img: Image.Image, rng: np.random.Generator, quality: tuple[int, int]) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A quarter turn (one time in four) or up to 30 degrees, corners in a random colour."""
    if rng.random() < 0.25:
        return img.transpose(
            (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)[rng.integers(2)]
        )
    angle = float(rng.uniform(-30, 30))
    return img.rotate(angle, Image.Resampling.BILINEAR, expand=False, fillcolor=_colour(rng))


def perspective(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Each corner moved inwards by up to 20% of the side: a photo of a print or a screen."""
    w, h = img.size
    jitter = rng.uniform(0, 0.2, size=(4, 2)) * (w, h)
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], float)
    signs = np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)], float)
    moved = corners + signs * jitter
    # PIL maps each output pixel to an input one: the moved quad (output) -> the image corners.
    rows = []
    for (x, y), (u, v) in zip(corners, moved):
        rows.append([u, v, 1, 0, 0, 0, -x * u, -x * v, x])
        rows.append([0, 0, 0, u, v, 1, -y * u, -y * v, y])
    a = np.array(rows)
    coeffs = np.linalg.solve(a[:, :8], a[:, 8])
    return img.transform(
        img.size,
        Image.Transform.PERSPECTIVE,
        coeffs.tolist(),
        Image.Resampling.BILINEAR,
        fillcolor=_colour(rng),
    )


def pixelate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    blocks = int(rng.integers(6, 17))
    small = img.resize((max(1, img.width // blocks), max(1, img.height // blocks)))
    return small.resize(img.size, Image.Resampling.NEAREST)


def frame(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The view shrunk inside a meme frame (white caption bars with words) or screenshot chrome
    (a dark status bar, a toolbar, a side margin), back at the view's size."""
    side = img.width
    canvas = Image.new("RGB", (side, side), (255, 255, 255) if rng.random() < 0.5 else _colour(rng))
    draw = ImageDraw.Draw(canvas)
    if rng.random() < 0.5:  # meme: caption bars above and below
        bar = int(side * rng.uniform(0.12, 0.25))
        inner = (side, side - 2 * bar)
        canvas.paste(img.resize(inner, Image.Resampling.BILINEAR), (0, bar))
        for y in (0, side - bar):
            word = " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), 2)).upper()
            draw.text(
                (side // 10, y + bar // 6), word, fill=(0, 0, 0), font=_font(max(8, bar // 2))
            )
    else:  # screenshot: status bar, toolbar, margins
        top = int(side * rng.uniform(0.06, 0.15))
        bottom = int(side * rng.uniform(0.0, 0.2))
        margin = int(side * rng.uniform(0.0, 0.12))
        draw.rectangle((0, 0, side, top), fill=_colour(rng))
        draw.rectangle((0, side - bottom, side, side), fill=_colour(rng))
        inner = (side - 2 * margin, side - top - bottom)
        canvas.paste(img.resize(inner, Image.Resampling.BILINEAR), (margin, top))
        draw.text(
            (side // 20, 1),
            "12:0" + str(int(rng.integers(10))),
            fill=(255, 255, 255),
            font=_font(max(6, top // 2)),
        )
    return canvas


def underlay(img: Image.Image, other: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The view, scaled to 35-80% of the side, pasted somewhere onto a crop of ``other``."""
    side = img.width
    base = random_resized_crop(other, rng, side, (0.3, 1.0), (0.75, 1.33))
    inner = max(4, int(side * rng.uniform(0.35, 0.8)))
    x = int(rng.integers(0, side - inner + 1))
    y = int(rng.integers(0, side - inner + 1))
    base.paste(img.resize((inner, inner), Image.Resampling.BILINEAR), (x, y))
    return base


class CopyAugment:
    """One random copy-like view of an RGB image, as a ``[size, size, 3]`` uint8 array."""

    def __init__(self, config: AugmentConfig | None = None):
        self.config = config or AugmentConfig()

    def __call__(
        self, img: Image.Image, rng: np.random.Generator, other: Image.Image | None = None
    ) -> np.ndarray:
        """``other``: another training image, the background of ``underlay`` (skipped if None)."""
        c = self.config
        out = random_resized_crop(img, rng, c.size, c.crop_scale, c.crop_ratio)
        if rng.random() < c.p_flip:
            out = ImageOps.mirror(out)
        if rng.random() < c.p_rotate:
            out = rotate(out, rng)
        if rng.random() < c.p_perspective:
            out = perspective(out, rng)
        if rng.random() < c.p_frame:
            out = frame(out, rng)
        if other is not None and rng.random() < c.p_underlay:
            out = underlay(out, other, rng)
        if rng.random() < c.p_pixelate:
            out = pixelate(out, rng)
        if rng.random() < c.p_pad:
            out = pad(out, rng)
        if rng.random() < c.p_jitter:
            out = colour_jitter(out, rng)
        if rng.random() < c.p_grayscale:
            out = out.convert("L").convert("RGB")
        if rng.random() < c.p_blur:
            out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.1, 1.5)) * c.size / 96))
        if rng.random() < c.p_text:
            out = text_overlay(out, rng)
        if rng.random() < c.p_emoji:
            out = emoji_overlay(out, rng)
        if rng.random() < c.p_jpeg:
            out = jpeg(out, rng, c.jpeg_quality)
        return np.asarray(out, dtype=np.uint8)
