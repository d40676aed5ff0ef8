"""Retry-safe file writes: everything goes to a temp path beside the target, then is renamed in.

A reader never sees a half-written file, and a killed writer leaves only a ``.tmp-*`` file that the
next run overwrites or sweeps away.
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
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet_atomic(path: Path, table: pa.Table, schema: pa.Schema) -> None:
    """Validate ``table`` against ``schema`` and write it with that schema, atomically."""
    validate(table, schema)
    with atomic_path(path) as tmp:
        pq.write_table(table.cast(schema), tmp, compression="zstd")


class AtomicParquetWriter:
    """Stream record batches into one Parquet file that appears only when closed successfully."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = Path(path)
        self.schema = schema
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
        if exc_type is None:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(exc_type, exc, tb)


def read_parquet(path: Path | list[Path], schema: pa.Schema) -> pa.Table:
    """Read one or several Parquet files and validate them against ``schema``."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths:
        return schema.empty_table()
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"missing parquet file(s): {missing[:5]}")
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    validate(table, schema)
    return table.select(schema.names)


def sweep_temp_files(directory: Path) -> int:
    """Delete leftovers of killed writers; returns how many were removed."""
    removed = 0
    directory = Path(directory)
    if directory.is_dir():
        for tmp in directory.rglob(f"{TMP_PREFIX}*"):
            if tmp.is_file():
                tmp.unlink()
                removed += 1
    return removed
