"""Files that look like images on the web but are broken, hostile or unusual.

Each bad file has an ``expected`` outcome for a careful decoder (Pillow with its pixel limit, EXIF
transposition and conversion to RGB):

- ``corrupt``: the header parses but decoding the pixels fails (a truncated JPEG);
- ``empty``: zero bytes;
- ``not_an_image``: an HTML error page saved as ``.jpg``;
- ``too_large``: a small PNG whose header declares 50000 x 50000 pixels (a decompression bomb);
- ``ok_convert``: decodes, but only becomes RGB after conversion (CMYK JPEG, 16-bit PNG, GIF);
- ``ok_rotated``: a JPEG with EXIF Orientation 6, whose width and height swap once transposed.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from curation.synth.images import render_image

BAD_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("expected", pa.string(), nullable=False),
        pa.field("note", pa.string()),
        # Size after EXIF transposition, for files that decode; null otherwise.
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)
HUGE_SIDE = 50_000
EXIF_ORIENTATION_TAG = 0x0112
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested image was not found on this server.</p></body>"
    b"</html>\n"
)


@dataclass(frozen=True)
class BadFile:
    key: str
    name: str
    expected: str
    note: str
    data: bytes
    size: tuple[int, int] | None  # (width, height) a decoder should report, after transposition


def _jpeg(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def huge_png_bytes(width: int = HUGE_SIDE, height: int = HUGE_SIDE, rows: int = 4) -> bytes:
    """A well-formed PNG header declaring ``width`` x ``height`` 8-bit grey pixels, followed by only
    ``rows`` compressed rows: a few hundred bytes on disk, gigabytes if a decoder trusts it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw_rows = (b"\x00" + b"\x00" * width) * rows  # filter byte 0 + a row of black pixels
    idat = zlib.compress(raw_rows, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _exif_rotated_jpeg(img: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6  # "rotate 90 CW to display"
    return _jpeg(img, exif=exif.tobytes())


def _gray16_png(rng: np.random.Generator, width: int, height: int) -> bytes:
    ramp = np.linspace(0, 65535, width, dtype=np.float64)[None, :]
    noise = rng.normal(0.0, 2000.0, size=(height, width))
    pixels = np.clip(ramp + noise, 0, 65535).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")  # uint16 -> mode I;16
    return buf.getvalue()


def _gif(rng: np.random.Generator, width: int, height: int) -> bytes:
    palette = rng.integers(0, 256, size=(16, 3), dtype=np.uint8).ravel().tolist()
    frames = []
    for _ in range(2):
        pixels = rng.integers(0, 16, size=(height // 8, width // 8), dtype=np.uint8)
        pixels = np.repeat(np.repeat(pixels, 8, axis=0), 8, axis=1)
        frame = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), pixels.tobytes())
        frame.putpalette(palette)
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return buf.getvalue()


def make_bad_files(rng: np.random.Generator) -> list[BadFile]:
    """Build every bad file in memory, drawing all randomness from ``rng``."""
    base = render_image(rng, 0, (160, 120))
    good_jpeg = _jpeg(base)
    cmyk = render_image(rng, 1, (128, 128)).convert("CMYK")
    rotated = render_image(rng, 2, (200, 120))
    return [
        BadFile(
            "bad-truncated", "truncated.jpg", "corrupt",
            "JPEG cut to 60% of its bytes: the header parses, the pixels do not",
            good_jpeg[: int(len(good_jpeg) * 0.6)], None,
        ),
        BadFile("bad-empty", "empty.jpg", "empty", "zero-byte file", b"", None),
        BadFile(
            "bad-html", "not_found_page.jpg", "not_an_image",
            "an HTML error page saved under an image name", _HTML, None,
        ),
        BadFile(
            "bad-huge", "huge.png", "too_large",
            f"PNG header declares {HUGE_SIDE}x{HUGE_SIDE} pixels; only a few rows are stored",
            huge_png_bytes(), None,
        ),
        BadFile(
            "bad-cmyk", "cmyk.jpg", "ok_convert", "CMYK JPEG (Adobe marker); convert to RGB",
            _jpeg(cmyk), cmyk.size,
        ),
        BadFile(
            "bad-gray16", "gray16.png", "ok_convert",
            "16-bit greyscale PNG (mode I;16); converting to RGB clips values above 255",
            _gray16_png(rng, 96, 80), (96, 80),
        ),
        BadFile(
            "bad-exif-rotated", "exif_rotated.jpg", "ok_rotated",
            "JPEG stored 200x120 with EXIF Orientation 6: 120x200 after exif_transpose",
            _exif_rotated_jpeg(rotated), (rotated.height, rotated.width),
        ),
        BadFile(
            "bad-gif", "animated.gif", "ok_convert", "two-frame palette GIF; convert to RGB",
            _gif(rng, 96, 64), (96, 64),
        ),
    ]  # fmt: skip


def write_bad_files(out_dir: Path, rng: np.random.Generator, relative_to: Path) -> pa.Table:
    """Write the bad files into ``out_dir`` and return their ground truth (BAD_SCHEMA), with file
    paths relative to ``relative_to``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = make_bad_files(rng)
    for item in bad:
        (out_dir / item.name).write_bytes(item.data)
    return pa.table(
        {
            "key": [b.key for b in bad],
            "file": [(out_dir / b.name).relative_to(relative_to).as_posix() for b in bad],
            "expected": [b.expected for b in bad],
            "note": [b.note for b in bad],
            "width": [b.size[0] if b.size else None for b in bad],
            "height": [b.size[1] if b.size else None for b in bad],
        },
        schema=BAD_SCHEMA,
    )
