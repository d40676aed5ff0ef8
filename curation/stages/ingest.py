"""Ingest: the first look at downloaded bytes.

``IngestStage`` (ENCODED_IMAGE -> IMAGE_RECORD, per shard, any engine) reads each image's bytes
(inline, or from its tar by offset), decodes them with a pixel limit checked before allocation
(a decompression bomb becomes ``rejected_too_large``), applies EXIF orientation, converts any mode to
RGB, filters by minimum side and maximum aspect ratio and, if enabled, blurs faces. Faces blurred
are stored as JPEG in ``<blurred_dir>/<batch>.tar`` and the record points there.

The ingest job (:mod:`curation.jobs.ingest`) chains it with exact dedup, perceptual hashes, near
dedup and the unique-images filter, each a stage writing its own folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from curation.imaging import DEFAULT_MAX_PIXELS, ImageRejected, decode_rgb
from curation.io import atomic_path
from curation.models.face_blur import FaceBlurConfig, FaceBlurrer
from curation.readers.image_bytes import ImageBytesError, ImageBytesReader
from curation.readers.tar_index import tar_members
from curation.safe_names import member_name
from curation.stages.base import Resources
from schemas import ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA, STATUS_OK

logger = logging.getLogger(__name__)

STATUS_READ_ERROR = "read_error"
STATUS_TOO_SMALL = "rejected_too_small"
STATUS_ASPECT = "rejected_aspect_ratio"


@dataclass(frozen=True)
class IngestChecks:
    """What ingest checks and changes in each image (the ingest job's config extends it)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 32
    max_aspect_ratio: float | None = 10.0
    batch_size: int = 256
    face_blur: FaceBlurConfig = field(default_factory=FaceBlurConfig)


@dataclass(frozen=True)
class IngestStageConfig:
    checks: IngestChecks = field(default_factory=IngestChecks)
    blurred_dir: str | None = None  # where blurred images go (required when face_blur.enabled)


class IngestStage:
    name = "ingest"
    input_schema = ENCODED_IMAGE_SCHEMA
    output_schema = IMAGE_RECORD_SCHEMA
    resources = Resources(cpus=1)
    batch_size = 256

    def __init__(self, config: IngestStageConfig | None = None):
        self.config = config or IngestStageConfig()
        self.batch_size = self.config.checks.batch_size
        self.blurrer: FaceBlurrer | None = None

    def setup(self) -> None:
        if self.config.checks.face_blur.enabled:
            if not self.config.blurred_dir:
                raise ValueError("face blurring needs IngestStageConfig.blurred_dir")
            self.blurrer = FaceBlurrer(self.config.checks.face_blur)
            self.blurrer.setup()

    def _check(self, data: bytes) -> tuple[str, str | None, object]:
        """(status, error message, decoded RGB image or None)."""
        settings = self.config.checks
        try:
            image = decode_rgb(data, settings.max_pixels)
        except ImageRejected as exc:
            return exc.status, str(exc), None
        short, long = sorted(image.size)
        if short < settings.min_side:
            return (
                STATUS_TOO_SMALL,
                f"{image.width}x{image.height}: a side is below {settings.min_side}",
                image,
            )
        if settings.max_aspect_ratio and long / short > settings.max_aspect_ratio:
            message = (
                f"{image.width}x{image.height}: aspect ratio above {settings.max_aspect_ratio}"
            )
            return STATUS_ASPECT, message, image
        return STATUS_OK, None, image

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        blurred: dict[str, tuple[bytes, list]] = {}
        with ImageBytesReader() as reader:
            for row in batch.to_pylist():
                record = {
                    "key": row["key"],
                    "url": row["url"],
                    "sha256": None,
                    "width": None,
                    "height": None,
                    "source_file": row["source_file"],
                    "source_offset": row["source_offset"],
                    "source_size": row["source_size"],
                }
                out.append(record)
                data = row["image"]
                if data is None:
                    try:
                        data = reader.read(
                            row["source_file"], row["source_offset"], row["source_size"], row["key"]
                        )
                    except ImageBytesError as exc:
                        record.update(status=STATUS_READ_ERROR, error_message=str(exc))
                        continue
                record["sha256"] = hashlib.sha256(data).hexdigest()
                status, error, image = self._check(data)
                record.update(status=status, error_message=error)
                if image is not None:
                    record.update(width=image.width, height=image.height)
                if status == STATUS_OK and self.blurrer is not None:
                    image, boxes = self.blurrer(image)
                    if boxes:
                        buffer = io.BytesIO()
                        quality = self.config.checks.face_blur.jpeg_quality
                        image.save(buffer, format="JPEG", quality=quality)
                        blurred[row["key"]] = (buffer.getvalue(), boxes)
        if blurred:
            self._store_blurred(out, blurred)
        return pa.Table.from_pylist(out, schema=IMAGE_RECORD_SCHEMA)

    def _store_blurred(self, records: list[dict], blurred: dict[str, tuple[bytes, list]]) -> None:
        """Write this batch's blurred images to one tar (named by its keys) and point at them."""
        name = hashlib.sha1("\n".join(sorted(blurred)).encode()).hexdigest()[:20]
        path = Path(self.config.blurred_dir) / f"{name}.tar"
        with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, (data, boxes) in sorted(blurred.items()):
                meta = json.dumps({"key": key, "faces": len(boxes), "boxes": boxes}).encode()
                for member, payload in (
                    (member_name(key, "jpg"), data),
                    (member_name(key, "json"), meta),
                ):
                    info = tarfile.TarInfo(member)
                    info.size, info.mode = len(payload), 0o444
                    tar.addfile(info, io.BytesIO(payload))
        offsets = tar_members(path)
        for record in records:
            if record["key"] in blurred:
                offset, size = offsets[member_name(record["key"], "jpg")]
                data = blurred[record["key"]][0]
                record.update(
                    source_file=str(path.resolve()),
                    source_offset=offset,
                    source_size=size,
                    sha256=hashlib.sha256(data).hexdigest(),
                )
