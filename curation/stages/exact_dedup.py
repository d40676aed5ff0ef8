"""Exact dedup: images with the same sha256 are one image, wherever they are.

A global stage: a pure function over the (key, sha256) of every ``ok`` image across all shards
(the ingest job runs it through :func:`curation.runner.run_table_stage`). Within a group of equal
digests the first key in key order is kept; every other one is recorded as an ``exact_duplicate``
of it (HASH_DEDUP_SCHEMA), so nothing is dropped without a trace.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import DEDUP_REASON_KEPT, HASH_DEDUP_SCHEMA, STATUS_OK

REASON_EXACT = "exact_duplicate"


def exact_duplicates(table: pa.Table) -> pa.Table:
    """HASH_DEDUP rows for a (key, sha256) table with distinct keys; null digests are kept."""
    table = table.select(["key", "sha256"]).sort_by("key")
    keys = table.column("key").to_pylist()
    digests = table.column("sha256").to_pylist()
    first: dict[str, str] = {}
    keep, duplicate_of = [], []
    for key, digest in zip(keys, digests):
        representative = first.setdefault(digest, key) if digest is not None else key
        keep.append(representative == key)
        duplicate_of.append(None if representative == key else representative)
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "keep": pa.array(keep, pa.bool_()),
            "duplicate_of": pa.array(duplicate_of, pa.string()),
            "reason": pa.array(
                [DEDUP_REASON_KEPT if k else REASON_EXACT for k in keep], pa.string()
            ),
            "hamming_distance": pa.array([None if k else 0 for k in keep], pa.int32()),
        },
        schema=HASH_DEDUP_SCHEMA,
    )


def read_ok_hashes(paths: list[Path]) -> pa.Table:
    """(key, sha256) of the ``ok`` rows of IMAGE_RECORD shards, reading only those columns."""
    tables = []
    for path in paths:
        table = pq.read_table(path, columns=["key", "sha256", "status"])
        tables.append(table.filter(pc.equal(table.column("status"), STATUS_OK)).select([0, 1]))
    if not tables:
        return pa.table({"key": pa.array([], pa.string()), "sha256": pa.array([], pa.string())})
    return pa.concat_tables(tables)
