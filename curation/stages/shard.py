"""LVD shards: the shuffle that orders the selected images, the stage that readies each sample's
bytes, and the writers of the two shard formats (ARCHITECTURE.md, "[shard]").

* :func:`shuffled_order`: one deterministic global order of all selected rows for a seed (rows are
  sorted by key first, so the order of the inputs does not matter), cut into shards of
  ``samples_per_shard`` by :func:`cut_shards`.
* :class:`ShardSampleStage` (SHARD_SOURCE -> PREPARED_SAMPLE): reads each sample's bytes (inline,
  a tar member or a Parquet row, through :mod:`curation.readers.image_bytes`), checks them against
  the record's sha256, finds the real format (its file extension), and re-encodes images whose long
  side exceeds ``max_side`` as JPEG. A row that fails keeps its key with a ``status`` and an
  ``error_message``; nothing is dropped here.
* :func:`write_tar` and :func:`write_parquet`: one shard's ready samples into a file object, as
  WebDataset members (``<key>.<ext>`` and ``<key>.json``) with the SHARD_INDEX rows locating each
  image's data, or as a Parquet table (LVD_SAMPLE) in row groups of ``row_group_size``.

Nothing here knows where files go: the job (:mod:`curation.jobs.shards`) names and commits them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from curation.config import check_choices
from curation.imaging import DEFAULT_MAX_PIXELS, ImageRejected, decode_rgb
from curation.readers.image_bytes import ImageBytesError, image_bytes_loaders
from curation.safe_names import UnsafeNameError, check_component, member_name
from curation.stages.base import Resources
from schemas import (
    LVD_SAMPLE_SCHEMA,
    PREPARED_SAMPLE_SCHEMA,
    SHARD_INDEX_SCHEMA,
    SHARD_SOURCE_SCHEMA,
    STATUS_OK,
)

# Per-row failures of the stage (besides the decode statuses of curation.imaging).
STATUS_READ_ERROR = "read_error"  # the bytes the record points at cannot be read
STATUS_EMPTY = "empty"
STATUS_SHA256_MISMATCH = "sha256_mismatch"  # the bytes found are not the record's image
STATUS_UNSAFE_KEY = "unsafe_key"  # a key that cannot name a file (or, in a tar, has a dot)
STATUS_DECODE_ERROR = "decode_error"

# Pillow's format name -> the file extension written; others are lower-cased (``ppm``).
EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "TIFF": "tif",
}
EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
TAR_FILE_MODE = 0o644


@dataclass(frozen=True)
class ShardConfig:
    """``shards``: how the selected images become LVD shards."""

    format: Literal["webdataset", "parquet"] = "webdataset"
    samples_per_shard: int = 1000
    seed: int = 0  # the global shuffle
    # None: the bytes as they are; else images whose long side exceeds it are decoded, resized to
    # it and re-encoded as JPEG at ``jpeg_quality``.
    max_side: int | None = None
    jpeg_quality: int = 90
    # Parquet shards: rows per row group, the unit a streaming reader fetches (100 images is what
    # Hugging Face uses for image datasets).
    row_group_size: int = 100
    batch_size: int = 64  # rows the stage reads and readies at a time (memory: images in flight)

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("samples_per_shard", "row_group_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(
                f"max_side must be at least 1 (or null to keep bytes), got {self.max_side}"
            )
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")

    @property
    def extension(self) -> str:
        """The shard files' extension."""
        return "tar" if self.format == "webdataset" else "parquet"


# ---------------------------------------------------------------------- order


def shuffled_order(keys: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """Row indices of ``keys`` in the global shuffle of ``seed``: sorted by key, then permuted by a
    generator seeded with ``seed`` alone, so the same keys in any input order give the same order."""
    by_key = pc.sort_indices(keys).to_numpy()
    return by_key[np.random.default_rng(seed).permutation(len(by_key))]


def cut_shards(order: np.ndarray, samples_per_shard: int) -> list[np.ndarray]:
    """``order`` in consecutive pieces of ``samples_per_shard`` (the last one may be shorter)."""
    return [order[i : i + samples_per_shard] for i in range(0, len(order), samples_per_shard)]


def shard_stem(number: int) -> str:
    return f"shard-{number:05d}"


# ---------------------------------------------------------------------- samples


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """Width and height as a viewer shows them (EXIF rotation applied), from the header alone."""
    width, height = image.size
    if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def reencode(data: bytes, max_side: int, quality: int) -> tuple[bytes, int, int]:
    """``data`` decoded (EXIF rotation applied), resized so its long side is ``max_side`` and
    encoded as JPEG; returns the bytes and the new width and height."""
    image = decode_rgb(data, DEFAULT_MAX_PIXELS, draft_size=(max_side, max_side))
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), size[0], size[1]


class SampleError(Exception):
    """One sample cannot be made; ``status`` says why (recorded on its row, never raised out)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def check_key(key: str, tar: bool) -> None:
    try:
        check_component(key, "sample key")
    except UnsafeNameError as exc:
        raise SampleError(STATUS_UNSAFE_KEY, str(exc)) from None
    if tar and "." in key:
        raise SampleError(
            STATUS_UNSAFE_KEY,
            f"sample key {key!r} holds a dot: WebDataset takes a key up to the first dot of a "
            "member name, so its members would not group under it",
        )


class ShardSampleStage:
    """SHARD_SOURCE rows -> PREPARED_SAMPLE rows: each sample's bytes as they will be written."""

    name = "shard_samples"
    input_schema = SHARD_SOURCE_SCHEMA
    output_schema = PREPARED_SAMPLE_SCHEMA
    resources = Resources(cpus=1)
    batch_size = 64

    def __init__(self, config: ShardConfig | None = None):
        self.config = config or ShardConfig()
        self.batch_size = self.config.batch_size

    def setup(self) -> None:
        pass

    def prepare(self, row: dict, load) -> dict:
        """The sample of one source row; raises :class:`SampleError`."""
        check_key(row["key"], tar=self.config.format == "webdataset")
        try:
            data = load()
        except ImageBytesError as exc:
            raise SampleError(STATUS_READ_ERROR, str(exc)) from None
        if not data:
            raise SampleError(STATUS_EMPTY, "no image bytes")
        digest = hashlib.sha256(data).hexdigest()
        if row["sha256"] and digest != row["sha256"]:
            raise SampleError(
                STATUS_SHA256_MISMATCH,
                f"the bytes read have sha256 {digest[:16]}..., the record says "
                f"{row['sha256'][:16]}... (a moved or rewritten source file?)",
            )
        try:
            with Image.open(io.BytesIO(data)) as image:
                extension = EXTENSIONS.get(image.format, (image.format or "").lower())
                width, height = displayed_size(image)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise SampleError(STATUS_DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
        width, height = row["width"] or width, row["height"] or height
        written = data
        max_side = self.config.max_side
        if max_side is not None and max(width, height) > max_side:
            try:
                written, width, height = reencode(data, max_side, self.config.jpeg_quality)
            except ImageRejected as exc:
                raise SampleError(exc.status, str(exc)) from None
            extension, digest = "jpg", hashlib.sha256(written).hexdigest()
        return {
            "image": written,
            "extension": extension,
            "sha256": digest,
            "width": width,
            "height": height,
            "source_sha256": row["sha256"] or hashlib.sha256(data).hexdigest(),
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Load in file order (tar members by offset, Parquet rows one file at a time), then put
        # the loaders back in the batch's order.
        by_file = pc.sort_indices(
            batch, [("source_file", "ascending"), ("source_offset", "ascending")]
        ).to_numpy()
        loaders: list = [None] * batch.num_rows
        for position, load in zip(by_file, image_bytes_loaders(batch.take(by_file))):
            loaders[position] = load
        rows = batch.to_pylist()
        out = {name: [] for name in PREPARED_SAMPLE_SCHEMA.names}
        for row, load in zip(rows, loaders):
            try:
                sample = {**self.prepare(row, load), "status": STATUS_OK, "error_message": None}
            except SampleError as exc:
                sample = {
                    **dict.fromkeys(("image", "extension", "sha256")),
                    "source_sha256": row["sha256"],
                    "status": exc.status,
                    "error_message": str(exc),
                }
            for name in out:
                out[name].append(sample[name] if name in sample else row.get(name))
        return pa.table(out, schema=PREPARED_SAMPLE_SCHEMA)


def ready_samples(prepared: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """The ok rows of a PREPARED_SAMPLE table as LVD_SAMPLE rows, and how many rows each other
    status covers (``dropped_<status>``)."""
    ok = pc.equal(prepared.column("status"), STATUS_OK)
    dropped = {
        f"dropped_{item['values']}": item["counts"]
        for item in pc.value_counts(prepared.filter(pc.invert(ok)).column("status")).to_pylist()
    }
    samples = prepared.filter(ok).select(LVD_SAMPLE_SCHEMA.names)
    return samples.cast(LVD_SAMPLE_SCHEMA), dropped


# ---------------------------------------------------------------------- writers


def sample_json(row: dict) -> bytes:
    """The ``<key>.json`` member: the sample's lineage, from URL and source bytes to selection."""
    lineage = {
        "key": row["key"],
        "url": row["url"],
        "sha256": row["sha256"],
        "extension": row["extension"],
        "width": row["width"],
        "height": row["height"],
        "seed_dataset": row["seed_dataset"],
        "mode": row["mode"],
        "seed_key": row["seed_key"],
        "rank": row["rank"],
        "similarity": row["similarity"],
        "cluster_id": row["cluster_id"],
        # Where the bytes came from, without their offset in that file: a download writes its
        # tar members in the order they arrive, so the offset differs between two downloads of
        # one URL list, and shards of the same selection must not (`lvd lineage` has it).
        "source": {
            "file": row["source_file"],
            "size": row["source_size"],
            "sha256": row["source_sha256"],
        },
    }
    return (json.dumps(lineage, sort_keys=True) + "\n").encode()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append one file member (fixed owner, mode and time: the same samples give the same bytes);
    returns the offset of its data in the archive."""
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = len(data), TAR_FILE_MODE, 0
    tar.addfile(member, io.BytesIO(data))
    # The archive's offset is now past the data's padding to a whole block.
    return tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def write_tar(samples: pa.Table, shard_name: str, out: IO[bytes]) -> pa.Table:
    """Write LVD_SAMPLE rows as a WebDataset tar into ``out``: ``<key>.<ext>`` then ``<key>.json``
    per sample, in row order. Returns the SHARD_INDEX rows, ``shard`` set to ``shard_name`` (the
    tar's name relative to the index's folder) and ``offset`` to each image's data offset."""
    index = {name: [] for name in SHARD_INDEX_SCHEMA.names}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for row in samples.to_pylist():
            member = member_name(row["key"], row["extension"])
            offset = _add_member(tar, member, row["image"])
            _add_member(tar, member_name(row["key"], "json"), sample_json(row))
            values = {**row, "shard": shard_name, "member": member, "offset": offset}
            values["size"] = len(row["image"])
            for name in index:
                index[name].append(values[name])
    return pa.table(index, schema=SHARD_INDEX_SCHEMA)


def write_parquet(samples: pa.Table, out: IO[bytes], row_group_size: int) -> None:
    """Write LVD_SAMPLE rows as one Parquet shard into ``out``: row groups of ``row_group_size``,
    the (incompressible) image bytes stored as they are, the other columns zstd-compressed; plain
    types only, so pyarrow, Spark and Hugging Face ``datasets`` read it."""
    compression = {name: "zstd" for name in LVD_SAMPLE_SCHEMA.names} | {"image": "none"}
    pq.write_table(
        samples.cast(LVD_SAMPLE_SCHEMA),
        out,
        row_group_size=row_group_size,
        compression=compression,
    )
