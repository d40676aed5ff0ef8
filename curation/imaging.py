"""Decoding untrusted image bytes into RGB, safely.

Shared by every stage that looks at pixels. The pixel count is checked from the header before any
pixel buffer is allocated, so a decompression bomb costs a header read, not gigabytes.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; larger web images are almost never useful

STATUS_EMPTY = "empty"
STATUS_DECODE_ERROR = "decode_error"
STATUS_TOO_LARGE = "rejected_too_large"


class ImageRejected(Exception):
    """The bytes are not a usable image; ``status`` says why (a per-row status, not a crash)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: Pillow's convert clips to 255; scale the full range down instead.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        grey = np.clip(array * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_rgb(
    data: bytes | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``data`` to an RGB image with EXIF orientation applied.

    ``draft_size``: the caller only needs at least this many pixels per side (it will downscale
    anyway), so a JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, keeping both
    sides >= ``draft_size``. Much cheaper for large JPEGs; other formats decode in full.

    Raises :class:`ImageRejected` with status ``empty``, ``decode_error`` or ``rejected_too_large``.
    """
    if not data:
        raise ImageRejected(STATUS_EMPTY, "no image bytes (0-byte file or missing payload)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageRejected(STATUS_DECODE_ERROR, f"invalid image size {width}x{height}")
            if width * height > max_pixels:
                raise ImageRejected(
                    STATUS_TOO_LARGE,
                    f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
                )
            image.seek(0)  # first frame of animations
            if draft_size is not None and image.format == "JPEG":
                # Square request: EXIF rotation, applied after decoding, cannot break it.
                side = max(draft_size)
                image.draft(image.mode if image.mode == "CMYK" else "RGB", (side, side))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(STATUS_TOO_LARGE, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        # Pillow's message embeds an object address; name the leading bytes instead (deterministic).
        raise ImageRejected(
            STATUS_DECODE_ERROR, f"not a recognised image format (starts with {data[:12]!r})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(STATUS_DECODE_ERROR, f"{type(exc).__name__}: {exc}") from exc
