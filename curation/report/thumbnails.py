"""Small JPEG thumbnails as ``data:`` URIs, read from where a run's records say the bytes live.

The report is one file that opens offline, so every picture is embedded. Pool images are found by
key in the IMAGE_RECORD folders (``unique_images/``, then ``deduplicated_images/``, then
``ingest/``); seed and evaluation images in the ENCODED_IMAGE folders the run packed them into
(``seed_<name>/``, ``embed_eval_<name>_inputs/``). Bytes are read with the one reader every stage
uses (:class:`~curation.readers.image_bytes.ImageBytesReader`), run-relative lineage resolved
against the run root, and decoded with the same guarded decoder as ingest, so a hostile image in a
run costs a header read, not the report.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.imaging import ImageRejected, decode_rgb
from curation.readers.image_bytes import ImageBytesError, ImageBytesReader, resolve_lineage
from curation.rundir import RunDir

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 96
JPEG_QUALITY = 80
POOL_FOLDERS = ("unique_images", "deduplicated_images", "ingest")
BYTE_COLUMNS = ["key", "source_file", "source_offset", "source_size"]


def thumbnail_uri(data: bytes | None, side: int = THUMBNAIL_SIDE) -> str | None:
    """``data`` decoded, shrunk to at most ``side`` pixels a side, as a JPEG ``data:`` URI; None
    when the bytes are not a usable image."""
    try:
        image = decode_rgb(data, draft_size=(side, side))
    except ImageRejected:
        return None
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _parquet_files(run: RunDir, folder: str) -> list:
    stage = run.stage(folder)
    return stage.outputs() or storage.list_files(stage.path, "*.parquet")


def _rows_for(paths: list, keys: set[str]) -> pa.Table | None:
    """The byte-location rows of ``keys`` in ``paths`` (None when the files lack the columns)."""
    if not paths or not keys:
        return None
    names = set(storage.read_schema(paths[0]).names)
    if not set(BYTE_COLUMNS) <= names:
        return None
    columns = BYTE_COLUMNS + (["image"] if "image" in names else [])
    table = storage.read_table(paths, columns=columns)
    return table.filter(pc.is_in(table.column("key"), pa.array(sorted(keys), pa.string())))


class Thumbnails:
    """Thumbnails by key for one run: ``pool(keys)``, ``encoded(folder, keys)``; each returns a
    dict key -> data URI, holding only the keys whose bytes could be read and decoded."""

    def __init__(self, run_root: str, side: int = THUMBNAIL_SIDE):
        self.run = RunDir(run_root)
        self.root = str(run_root)
        self.side = side

    def pool(self, keys: Iterable[str]) -> dict[str, str]:
        """Pool images, looked up folder by folder until every key is found."""
        wanted = set(keys)
        found: dict[str, str] = {}
        for folder in POOL_FOLDERS:
            missing = wanted - found.keys()
            if not missing:
                break
            found.update(self._from_rows(_rows_for(_parquet_files(self.run, folder), missing)))
        return found

    def encoded(self, folder: str, keys: Iterable[str]) -> dict[str, str]:
        """Images packed into an ENCODED_IMAGE folder of the run (inline bytes or references)."""
        return self._from_rows(_rows_for(_parquet_files(self.run, folder), set(keys)))

    def _from_rows(self, rows: pa.Table | None) -> dict[str, str]:
        if rows is None or not rows.num_rows:
            return {}
        rows = resolve_lineage(rows, self.root)
        inline = rows.column("image").to_pylist() if "image" in rows.column_names else None
        found: dict[str, str] = {}
        with ImageBytesReader() as reader:
            for i, row in enumerate(rows.select(BYTE_COLUMNS).to_pylist()):
                key = row["key"]
                try:
                    data = inline[i] if inline and inline[i] is not None else None
                    if data is None:
                        data = reader.read(
                            row["source_file"], row["source_offset"], row["source_size"], key
                        )
                except ImageBytesError as exc:
                    logger.warning("report: no thumbnail for %s: %s", key, exc)
                    continue
                uri = thumbnail_uri(data, self.side)
                if uri is not None:
                    found[key] = uri
        return found
