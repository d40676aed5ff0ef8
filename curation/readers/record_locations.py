"""Where each image's bytes are, by key: the ``source_*`` columns of IMAGE_RECORD shards, with
run-relative ``source_file`` values resolved against the run each shard lies in
(``<run>/<stage>/<shard>``), for readers that get keys from elsewhere (the copy dedup's pixel
check)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from curation import storage
from curation.readers.image_bytes import resolve_lineage

NOT_CHECKED = (
    "dedup.verify: the image records do not say where each image's bytes are (no source_file "
    "column, or no records): pairs under the threshold are not checked with pixels"
)

LOCATION_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_offset", pa.int64()),
        pa.field("source_size", pa.int64()),
    ]
)


def source_locations(records: list[Path | str]) -> pa.Table:
    """LOCATION_SCHEMA rows of every row of the IMAGE_RECORD shard files ``records``."""
    tables = [LOCATION_SCHEMA.empty_table()]
    for path in records:
        table = storage.read_table(path, columns=LOCATION_SCHEMA.names)
        run_root = str(storage.as_path(path).parent.parent)
        table = resolve_lineage(table, run_root).select(LOCATION_SCHEMA.names)
        tables.append(table.cast(LOCATION_SCHEMA))
    return pa.concat_tables(tables)


def record_files(paths: list[Path | str]) -> list[str]:
    """The IMAGE_RECORD shard files of ``paths`` (a folder: its visible ``.parquet`` files)."""
    files: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(str(p) for p in path.glob("*.parquet") if p.name[0] not in "._")
        else:
            files.append(str(path))
    return files


def locate_images(records: list[Path | str]) -> bool:
    """Whether every file of ``records`` says where its images' bytes are (its schema has the
    ``source_*`` columns); reads only the schemas."""
    for path in records:
        names = storage.read_schema(path).names
        if not set(LOCATION_SCHEMA.names) <= set(names):
            return False
    return bool(records)
