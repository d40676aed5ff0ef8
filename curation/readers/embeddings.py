"""Read EMBEDDING shards as (keys, matrix) of the images that were embedded.

Rows whose ``status`` is not ``ok`` (null embedding) are left out. Shards written before EMBEDDING
v2 (no ``status`` column: only images that worked were written) read the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.readers.input_shards import read_shard_schema
from schemas import STATUS_OK, SchemaError


def read_embeddings(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """Keys and the ``(n, dim)`` float32 matrix of the ``ok`` rows of EMBEDDING shards."""
    tables = []
    for path in paths:
        schema = read_shard_schema(Path(path))
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
        table = pq.read_table(path)
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
