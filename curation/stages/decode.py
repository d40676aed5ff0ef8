"""Decode and validate images: the first look at untrusted bytes.

Pillow decode with a pixel-count limit checked before allocation, EXIF orientation applied, any
mode converted to RGB; out come the image's sha256, decoded width and height, and a per-row
``status`` / ``error_message`` (``ok``, ``empty``, ``decode_error``, ``rejected_too_large``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

from curation.imaging import DEFAULT_MAX_PIXELS, ImageRejected, decode_rgb
from curation.stages.base import Resources
from schemas import ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA, STATUS_OK


@dataclass(frozen=True)
class DecodeConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 256


class DecodeStage:
    name = "decode"
    input_schema = ENCODED_IMAGE_SCHEMA
    output_schema = IMAGE_RECORD_SCHEMA
    resources = Resources(cpus=1)
    batch_size = 256

    def __init__(self, config: DecodeConfig | None = None):
        self.config = config or DecodeConfig()
        self.batch_size = self.config.batch_size

    def setup(self) -> None:
        pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        images = batch.column("image").to_pylist()
        sha256, widths, heights, statuses, errors = [], [], [], [], []
        for data in images:
            sha256.append(hashlib.sha256(data).hexdigest() if data else None)
            try:
                image = decode_rgb(data, self.config.max_pixels)
            except ImageRejected as exc:
                widths.append(None)
                heights.append(None)
                statuses.append(exc.status)
                errors.append(str(exc))
                continue
            widths.append(image.width)
            heights.append(image.height)
            statuses.append(STATUS_OK)
            errors.append(None)
        return pa.table(
            {
                "key": batch.column("key"),
                "url": batch.column("url"),
                "sha256": pa.array(sha256, pa.string()),
                "width": pa.array(widths, pa.int32()),
                "height": pa.array(heights, pa.int32()),
                "status": pa.array(statuses, pa.string()),
                "error_message": pa.array(errors, pa.string()),
                "source_file": batch.column("source_file"),
                "source_offset": batch.column("source_offset"),
                "source_size": batch.column("source_size"),
            },
            schema=IMAGE_RECORD_SCHEMA,
        )
