"""Retry-safe file writes: on local disk everything goes to a temp path beside the target, then is
renamed in; on an object store (a URI, see :mod:`curation.storage`) it is written once, whole, under
its final name.

A reader never sees a half-written file: locally a killed writer leaves only a ``.tmp-*`` file that
the next run overwrites or sweeps away; on a store the object appears only when its upload completes
(a killed upload leaves nothing visible). Stores have no rename, so "complete" is decided by the
shard marker written after the output (see :mod:`curation.runner`).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from schemas import validate

TMP_PREFIX = ".tmp-"


def temp_path_for(path: Path) -> Path:
    # Unique per writer so two retries of the same shard cannot clobber each other's temp file.
    return path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path; on success fsync it and rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    storage.write_bytes(path, data)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(storage.read_bytes(path))


def write_parquet_atomic(path: Path, table: pa.Table, schema: pa.Schema) -> None:
    """Validate ``table`` against ``schema`` and write it with that schema, atomically."""
    validate(table, schema)
    with AtomicParquetWriter(path, schema) as writer:
        writer.write(table)


class AtomicParquetWriter:
    """Stream record batches into one Parquet file that appears only when closed successfully."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = storage.as_path(path)
        self.schema = schema
        if storage.is_uri(self.path):
            # No rename on a store: build the file in memory, upload it whole once it is complete.
            self._ctx = None
            self._buffer = pa.BufferOutputStream()
            self._writer = pq.ParquetWriter(self._buffer, schema, compression="zstd")
        else:
            self._ctx = atomic_path(self.path)
            self._tmp = self._ctx.__enter__()
            self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        validate(table, self.schema)
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()
        if self._ctx is None:
            if exc_type is None:
                storage.write_bytes(self.path, self._buffer.getvalue().to_pybytes())
            return
        if exc_type is None:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(exc_type, exc, tb)


def read_parquet(path: Path | list[Path], schema: pa.Schema) -> pa.Table:
    """Read one or several Parquet files and validate them against ``schema``."""
    paths = [path] if isinstance(path, str | Path | storage.ObjectPath) else list(path)
    if not paths:
        return schema.empty_table()
    missing = [str(p) for p in paths if not storage.exists(p)]
    if missing:
        raise FileNotFoundError(f"missing parquet file(s): {missing[:5]}")
    table = pa.concat_tables(
        [pq.read_table(inner, filesystem=fs) for fs, inner in map(storage.filesystem, paths)]
    )
    validate(table, schema)
    return table.select(schema.names)


def sweep_temp_files(directory: Path) -> int:
    """Delete leftovers of killed writers; returns how many were removed (none on a store: there a
    killed upload leaves no object, and an output without its marker is ignored, then rewritten)."""
    removed = 0
    if storage.is_uri(directory):
        return 0
    directory = Path(directory)
    if directory.is_dir():
        for tmp in directory.rglob(f"{TMP_PREFIX}*"):
            if tmp.is_file():
                tmp.unlink()
                removed += 1
    return removed
