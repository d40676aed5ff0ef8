"""A 64-bit perceptual hash per image, for near-exact dedup.

DINOv2 removed near-identical images with a PCA hash before copy detection. The DCT is the
classical stand-in for the PCA of natural images (its basis approximates their principal
components), so the hash is: the image in greyscale at 32x32, its 2-D DCT-II, and the signs of the
64 lowest-frequency AC coefficients in zigzag order. Re-encoding and mild resizing flip few bits;
distinct images differ in about half of them.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from curation.imaging import DEFAULT_MAX_PIXELS
from curation.readers.image_bytes import ImageBytesError, ImageBytesReader
from curation.stages.base import Resources
from schemas import IMAGE_HASH_SCHEMA, IMAGE_RECORD_SCHEMA, STATUS_OK

SIDE = 32
BITS = 64


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


def _zigzag(n: int) -> list[tuple[int, int]]:
    def order(cell: tuple[int, int]) -> tuple[int, int]:
        u, v = cell
        return (u + v, u if (u + v) % 2 else v)

    return sorted(((u, v) for u in range(n) for v in range(n)), key=order)


_DCT = _dct_matrix(SIDE)
_AC = np.array(_zigzag(SIDE)[1 : BITS + 1])  # skip the DC term


def phash_pixels(grey: np.ndarray) -> int:
    """The hash of a SIDE x SIDE greyscale array, as a signed int64 (two's complement)."""
    coefficients = _DCT @ grey.astype(np.float64) @ _DCT.T
    bits = coefficients[_AC[:, 0], _AC[:, 1]] > 0
    return int(np.packbits(bits).view(">i8")[0])  # first coefficient is the top bit


def phash_image(image: Image.Image) -> int:
    grey = image.convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return phash_pixels(np.asarray(grey))


def phash_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Hash encoded image bytes; JPEGs decode at reduced scale (draft mode), which is much faster.

    Raises ValueError for bytes that do not decode or exceed ``max_pixels``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise ValueError(f"{image.width}x{image.height} exceeds {max_pixels} pixels")
            image.draft("L", (2 * SIDE, 2 * SIDE))
            image = ImageOps.exif_transpose(image)
            return phash_image(image)
        except (
            OSError,
            SyntaxError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as exc:
            raise ValueError(f"cannot hash image: {exc}") from exc


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & (2**64 - 1)).bit_count()


@dataclass(frozen=True)
class PhashConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 512


class PhashStage:
    """IMAGE_RECORD -> IMAGE_HASH for the rows with status ``ok`` (the others have no image)."""

    name = "phash"
    input_schema = IMAGE_RECORD_SCHEMA
    output_schema = IMAGE_HASH_SCHEMA
    resources = Resources(cpus=1)
    batch_size = 512

    def __init__(self, config: PhashConfig | None = None):
        self.config = config or PhashConfig()
        self.batch_size = self.config.batch_size

    def setup(self) -> None:
        pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys, digests, hashes = [], [], []
        with ImageBytesReader() as reader:
            for row in batch.to_pylist():
                if row["status"] != STATUS_OK:
                    continue
                try:
                    data = reader.read(
                        row["source_file"], row["source_offset"], row["source_size"], row["key"]
                    )
                    value = phash_bytes(data, self.config.max_pixels)
                except (ImageBytesError, ValueError):
                    continue  # ingest decoded it; a later failure leaves it out of near dedup
                keys.append(row["key"])
                digests.append(row["sha256"])
                hashes.append(value)
        return pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "sha256": pa.array(digests, pa.string()),
                "phash": pa.array(hashes, pa.int64()),
            },
            schema=IMAGE_HASH_SCHEMA,
        )
