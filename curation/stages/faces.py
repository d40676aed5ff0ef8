"""Face blurring, as LVD-142M did for identifiable faces (DINOv2 paper; SPEC.md section 1).

IMAGE_RECORD -> FACE_RECORD (the record, plus ``face_count`` and ``face_boxes``), one row per
input row. Each ``ok`` image is decoded, its faces are found and blurred
(:mod:`curation.models.face_blur`: the detector, the blur rule); an image with faces is stored as
JPEG in ``<blurred_dir>/<batch>.tar`` (with a JSON of its boxes) and its record points there, with
the blurred bytes' sha256. ``face_boxes`` holds the grown boxes that were blurred,
``[left, top, right, bottom]`` in pixels of the decoded image; rows not ``ok`` get null counts.
"""

from __future__ import annotations

import hashlib
import io
import json
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
from schemas import FACE_RECORD_SCHEMA, IMAGE_RECORD_SCHEMA, STATUS_OK

STATUS_READ_ERROR = "read_error"


@dataclass(frozen=True)
class FacesStageConfig:
    face_blur: FaceBlurConfig = field(default_factory=lambda: FaceBlurConfig(enabled=True))
    blurred_dir: str | None = None  # where blurred images go
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 256


class FacesStage:
    name = "faces"
    input_schema = IMAGE_RECORD_SCHEMA
    output_schema = FACE_RECORD_SCHEMA
    resources = Resources(cpus=1)

    def __init__(self, config: FacesStageConfig | None = None):
        self.config = config or FacesStageConfig()
        self.batch_size = self.config.batch_size
        self.blurrer: FaceBlurrer | None = None

    def setup(self) -> None:
        if not self.config.blurred_dir:
            raise ValueError("the faces stage needs FacesStageConfig.blurred_dir")
        self.blurrer = FaceBlurrer(self.config.face_blur)
        self.blurrer.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.blurrer is None:
            self.setup()
        records = batch.select(IMAGE_RECORD_SCHEMA.names).to_pylist()
        blurred: dict[str, tuple[bytes, list]] = {}
        with ImageBytesReader() as reader:
            for record in records:
                record.update(face_count=None, face_boxes=None)
                if record["status"] != STATUS_OK:
                    continue
                try:
                    data = reader.read(
                        record["source_file"],
                        record["source_offset"],
                        record["source_size"],
                        record["key"],
                    )
                    image = decode_rgb(data, self.config.max_pixels)
                except ImageBytesError as exc:
                    record.update(status=STATUS_READ_ERROR, error_message=str(exc))
                    continue
                except ImageRejected as exc:
                    record.update(status=exc.status, error_message=str(exc))
                    continue
                image, boxes = self.blurrer(image)
                record.update(face_count=len(boxes), face_boxes=[list(b) for b in boxes])
                if boxes:
                    buffer = io.BytesIO()
                    image.save(buffer, format="JPEG", quality=self.config.face_blur.jpeg_quality)
                    blurred[record["key"]] = (buffer.getvalue(), boxes)
        if blurred:
            self._store_blurred(records, blurred)
        return pa.Table.from_pylist(records, schema=FACE_RECORD_SCHEMA)

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
                record.update(
                    source_file=str(path.resolve()),
                    source_offset=offset,
                    source_size=size,
                    sha256=hashlib.sha256(blurred[record["key"]][0]).hexdigest(),
                )
