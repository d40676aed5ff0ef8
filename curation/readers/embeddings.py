"""Read EMBEDDING shards as (keys, matrix) of the images that were embedded.

Rows whose ``status`` is not ``ok`` (null embedding) are left out. Shards written before EMBEDDING
v2 (no ``status`` column: only images that worked were written) read the same way. Shards may be
local paths or URIs (read through :mod:`curation.storage`).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from schemas import STATUS_OK, SchemaError


def _read_shard(path: str | os.PathLike) -> pa.Table:
    """One shard, or a :class:`SchemaError` naming it if it is not a readable Parquet file."""
    try:
        return storage.read_table(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc


def read_embeddings(paths: list[str | os.PathLike]) -> tuple[list[str], np.ndarray]:
    """Keys and the ``(n, dim)`` float32 matrix of the ``ok`` rows of EMBEDDING shards."""
    tables = []
    for path in paths:
        table = _read_shard(path)
        schema = table.schema
        field = schema.field("embedding") if "embedding" in schema.names else None
        if (
            "key" not in schema.names
            or field is None
            or not pa.types.is_fixed_size_list(field.type)
        ):
            raise SchemaError(
                f"{path}: not EMBEDDING shards (need 'key' and a fixed-size list 'embedding'); "
                f"found {schema.names}"
            )
        if "status" in table.column_names:
            table = table.filter(pc.equal(table.column("status"), STATUS_OK))
        tables.append(table.select(["key", "embedding"]))
    if not tables:
        raise FileNotFoundError("no embedding shards to read")
    dims = {t.schema.field("embedding").type.list_size for t in tables}
    if len(dims) != 1:
        raise SchemaError(f"embedding shards of different widths {sorted(dims)}: {paths[:3]}")
    table = pa.concat_tables(tables)
    matrix = table.column("embedding").combine_chunks().flatten().to_numpy()
    return table.column("key").to_pylist(), matrix.reshape(table.num_rows, dims.pop())


def embedded_rows(batch: pa.Table, dim: int) -> tuple[pa.Table, np.ndarray]:
    """A batch of EMBEDDING rows cut to the ``ok`` ones, and their ``(n, dim)`` vectors
    (zero-copy over the fixed-size list)."""
    batch = batch.filter(pc.equal(batch.column("status"), STATUS_OK))
    flat = batch.column("embedding").combine_chunks().flatten().to_numpy()
    return batch, flat.reshape(batch.num_rows, dim)
