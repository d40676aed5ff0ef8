"""Ingest: the first look at downloaded bytes, then exact and near-exact dedup.

``IngestStage`` (ENCODED_IMAGE -> IMAGE_RECORD, per shard, any engine) reads each image's bytes
(inline, or from its tar by offset), decodes them with a pixel limit checked before allocation
(a decompression bomb becomes ``rejected_too_large``), applies EXIF orientation, converts any mode to
RGB, filters by minimum side and maximum aspect ratio and, if enabled, blurs faces. Faces blurred
are stored as JPEG in ``ingest/blurred/<batch>.tar`` and the record points there.

``run_ingest`` then runs, over all shards: exact dedup (sha256), perceptual hashes, near-exact
dedup, and writes ``unique_images/``: the ``ok`` records that are nobody's duplicate.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.download.blobs import BlobReader, BlobReadError
from curation.download.names import member_name
from curation.download.shards import tar_members
from curation.imaging import DEFAULT_MAX_PIXELS, STATUS_OK, ImageRejected, decode_rgb
from curation.io import atomic_path
from curation.runner import run_stage
from curation.stages.base import Resources, StageSpec
from curation.stages.exact_dedup import OUTPUT as EXACT_OUTPUT
from curation.stages.exact_dedup import run_exact_dedup
from curation.stages.face_blur import FaceBlurConfig, FaceBlurrer
from curation.stages.near_dedup import OUTPUT as NEAR_OUTPUT
from curation.stages.near_dedup import NearDedupConfig, run_near_dedup
from curation.stages.phash import PhashConfig, PhashStage
from schemas import ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA

logger = logging.getLogger(__name__)

STATUS_READ_ERROR = "read_error"
STATUS_TOO_SMALL = "rejected_too_small"
STATUS_ASPECT = "rejected_aspect_ratio"


@dataclass(frozen=True)
class IngestConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 32
    max_aspect_ratio: float | None = 10.0
    batch_size: int = 256
    face_blur: FaceBlurConfig = field(default_factory=FaceBlurConfig)
    exact_dedup: bool = True
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)


@dataclass(frozen=True)
class IngestStageConfig:
    settings: IngestConfig = field(default_factory=IngestConfig)
    blurred_dir: str | None = None  # where blurred images go (required when face_blur.enabled)


class IngestStage:
    name = "ingest"
    input_schema = ENCODED_IMAGE_SCHEMA
    output_schema = IMAGE_RECORD_SCHEMA
    resources = Resources(cpus=1)
    batch_size = 256

    def __init__(self, config: IngestStageConfig | None = None):
        self.config = config or IngestStageConfig()
        self.batch_size = self.config.settings.batch_size
        self.blurrer: FaceBlurrer | None = None

    def setup(self) -> None:
        if self.config.settings.face_blur.enabled:
            if not self.config.blurred_dir:
                raise ValueError("face blurring needs IngestStageConfig.blurred_dir")
            self.blurrer = FaceBlurrer(self.config.settings.face_blur)
            self.blurrer.setup()

    def _check(self, data: bytes) -> tuple[str, str | None, object]:
        """(status, error message, decoded RGB image or None)."""
        settings = self.config.settings
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
        with BlobReader() as reader:
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
                    except BlobReadError as exc:
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
                        quality = self.config.settings.face_blur.jpeg_quality
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


@dataclass(frozen=True)
class UniqueImagesConfig:
    dedup_outputs: tuple[str, ...] = ()  # HASH_DEDUP files whose non-kept keys are dropped


class UniqueImagesStage:
    """IMAGE_RECORD -> IMAGE_RECORD: the ``ok`` records no dedup marked as a duplicate."""

    name = "unique_images"
    input_schema = IMAGE_RECORD_SCHEMA
    output_schema = IMAGE_RECORD_SCHEMA
    resources = Resources(cpus=1)
    batch_size = 4096

    def __init__(self, config: UniqueImagesConfig | None = None):
        self.config = config or UniqueImagesConfig()
        self.dropped = pa.array([], pa.string())

    def setup(self) -> None:
        dropped = []
        for path in self.config.dedup_outputs:
            table = pq.read_table(path, columns=["key", "keep"])
            dropped.append(table.filter(pc.invert(table.column("keep"))).column("key"))
        if dropped:
            self.dropped = pa.chunked_array(dropped, pa.string()).combine_chunks()

    def __call__(self, batch: pa.Table) -> pa.Table:
        ok = pc.equal(batch.column("status"), STATUS_OK)
        unique = pc.invert(pc.is_in(batch.column("key"), value_set=self.dropped))
        return batch.filter(pc.and_(ok, unique))


def _face_counts(record_shards: list[Path], blurred_dir: Path) -> dict:
    """Images blurred and faces found, from the blurred tars the records point at."""
    tars = set()
    for shard in record_shards:
        files = pq.read_table(shard, columns=["source_file"]).column("source_file")
        tars.update(f for f in pc.unique(files).to_pylist() if f and Path(f).parent == blurred_dir)
    images = faces = 0
    for path in sorted(tars):
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if info.name.endswith(".json"):
                    images += 1
                    faces += json.loads(tar.extractfile(info).read())["faces"]
    return {"face_blur_images": images, "face_blur_faces": faces}


def run_ingest(cfg, engine, inputs: list[Path] | None = None) -> dict:
    """Ingest a run's downloaded shards (or ``inputs``, ENCODED_IMAGE parts), then dedup them.

    Writes ``<run>/ingest/`` (IMAGE_RECORD, every image with its status), ``dedup_exact/``,
    ``phash/``, ``dedup_near/`` and ``unique_images/`` (what later stages should read); returns
    each stage's stats.
    """
    from curation.stages.download import encoded_image_shards

    run = cfg.run_dir
    settings: IngestConfig = cfg.ingest
    inputs = encoded_image_shards(cfg) if inputs is None else inputs
    if not inputs:
        raise FileNotFoundError(f"no downloaded shards under {run.root}; run `lvd download` first")
    run.save_config(cfg)
    stage = run.stage("ingest")
    blurred_dir = (stage.path / "blurred").resolve()
    spec = StageSpec(IngestStage, IngestStageConfig(settings, str(blurred_dir)))
    stats = {"ingest": run_stage(spec, inputs, stage, engine)}
    records = stage.outputs()
    ingest_stats = dict(stats["ingest"])
    seconds = ingest_stats.get("seconds") or 0
    ingest_stats["images_per_second"] = (
        round(ingest_stats.get("status_ok", 0) / seconds, 2) if seconds else None
    )
    if settings.face_blur.enabled:
        ingest_stats.update(_face_counts(records, blurred_dir))
    stage.write_stats(ingest_stats)
    stats["ingest"] = ingest_stats
    dedup_outputs = []
    if settings.exact_dedup:
        stats["dedup_exact"] = run_exact_dedup(records, run.stage("dedup_exact"))
        dedup_outputs.append(str(run.stage("dedup_exact").path / EXACT_OUTPUT))
    if settings.near_dedup.enabled:
        phash = StageSpec(PhashStage, PhashConfig(max_pixels=settings.max_pixels))
        stats["phash"] = run_stage(phash, records, run.stage("phash"), engine)
        exact = Path(dedup_outputs[0]) if dedup_outputs else None
        stats["dedup_near"] = run_near_dedup(
            run.stage("phash").outputs(), exact, run.stage("dedup_near"), settings.near_dedup
        )
        dedup_outputs.append(str(run.stage("dedup_near").path / NEAR_OUTPUT))
    unique = StageSpec(UniqueImagesStage, UniqueImagesConfig(tuple(dedup_outputs)))
    stats["unique_images"] = run_stage(unique, records, run.stage("unique_images"), engine)
    return stats


def unique_image_shards(cfg) -> list[Path]:
    """IMAGE_RECORD shards of the ``ok``, deduplicated images: what embedding stages read."""
    return cfg.run_dir.stage("unique_images").outputs()
