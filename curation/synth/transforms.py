"""Copy transformations used to plant near-duplicates in the synthetic pool.

Each transform is a function ``(img, rng) -> img`` over RGB PIL images, and ``TRANSFORMS`` names
them so the ground truth can record which one made each copy. The edits follow the usual copy
detection benchmarks (e.g. the DISC21 / SSCD augmentations): re-encoding, rescaling, cropping,
flipping, colour changes, overlaid text and padding.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]

MIN_SIDE = 32
_WORDS = ("SALE", "photo", "lvd", "copyright", "sample", "HD", "new", "img", "www", "stock")


def exact(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The image itself (the web writes exact copies byte for byte)."""
    return img.copy()


def jpeg_reencode(img: Image.Image, rng: np.random.Generator, quality: int) -> Image.Image:
    """Encode at ``quality`` and decode: the image carries that quality's artefacts."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


def resize(img: Image.Image, rng: np.random.Generator, scale: float) -> Image.Image:
    """Rescale both sides by ``scale`` (never below MIN_SIDE pixels)."""
    width = max(MIN_SIDE, int(round(img.width * scale)))
    height = max(MIN_SIDE, int(round(img.height * scale)))
    return img.resize((width, height), Image.Resampling.BILINEAR)


def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep a random window of 65-90% of each side."""
    width = max(MIN_SIDE, int(img.width * rng.uniform(0.65, 0.9)))
    height = max(MIN_SIDE, int(img.height * rng.uniform(0.65, 0.9)))
    left = int(rng.integers(0, img.width - width + 1))
    top = int(rng.integers(0, img.height - height + 1))
    return img.crop((left, top, left + width, top + height))


def hflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(img)


def colour_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random brightness, contrast and saturation changes of up to about +-30%."""
    out = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
    out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.7, 1.3)))
    return ImageEnhance.Color(out).enhance(float(rng.uniform(0.6, 1.4)))


def text_overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Draw a short caption (PIL's bundled default font) somewhere on the image."""
    out = img.copy()
    n_words = int(rng.integers(1, 3))
    words = [_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), size=n_words)]
    text = " ".join(words) + f" {int(rng.integers(0, 100))}"
    font_size = max(10, int(min(img.size) * rng.uniform(0.08, 0.16)))
    try:
        font = ImageFont.load_default(size=font_size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: fixed bitmap font
        font = ImageFont.load_default()
    x = int(rng.integers(0, max(1, img.width // 2)))
    y = int(rng.integers(0, max(1, img.height - font_size)))
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    outline = tuple(255 - c for c in colour)
    ImageDraw.Draw(out).text(
        (x, y), text, fill=colour, font=font, stroke_width=1, stroke_fill=outline
    )
    return out


def pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Add borders of 4-20% of the side on each edge, in one random colour."""
    borders = [int(side * rng.uniform(0.04, 0.2)) for side in (img.width, img.height) * 2]
    left, top, right, bottom = borders[0], borders[1], borders[2], borders[3]
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return ImageOps.expand(img, border=(left, top, right, bottom), fill=colour)


def _with(fn: Callable[..., Image.Image], **kwargs: object) -> Transform:
    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return fn(img, rng, **kwargs)

    return transform


TRANSFORMS: dict[str, Transform] = {
    "exact": exact,
    "jpeg_q40": _with(jpeg_reencode, quality=40),
    "jpeg_q70": _with(jpeg_reencode, quality=70),
    "resize_0.6": _with(resize, scale=0.6),
    "resize_0.8": _with(resize, scale=0.8),
    "crop": crop,
    "hflip": hflip,
    "jitter": colour_jitter,
    "text": text_overlay,
    "pad": pad,
}
# Transforms that make a visibly different file (everything but the byte-for-byte copy).
NEAR_DUPLICATE_TRANSFORMS: tuple[str, ...] = tuple(name for name in TRANSFORMS if name != "exact")
# The edits a perceptual hash is expected to survive (near-exact dedup).
NEAR_EXACT_TRANSFORMS: tuple[str, ...] = ("exact", "jpeg_q40", "jpeg_q70", "resize_0.8")


def apply_transform(name: str, img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Apply the registered transform ``name``; the result is always RGB."""
    try:
        transform = TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown copy transform {name!r}; known: {sorted(TRANSFORMS)}") from None
    return transform(img.convert("RGB"), rng).convert("RGB")
