"""Exact dedup: images with the same sha256 are one image, wherever they are.

A global stage: a pure function over the (key, sha256) of every ``ok`` image across all shards.
Within a group of equal digests the first key in key order is kept; every other one is recorded as
an ``exact_duplicate`` of it (HASH_DEDUP_SCHEMA), so nothing is dropped without a trace.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.imaging import STATUS_OK
from curation.io import write_parquet_atomic
from curation.rundir import StageDir
from schemas import HASH_DEDUP_SCHEMA

logger = logging.getLogger(__name__)

REASON_KEPT = "kept"
REASON_EXACT = "exact_duplicate"
OUTPUT = "part-00000.parquet"


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
            "reason": pa.array([REASON_KEPT if k else REASON_EXACT for k in keep], pa.string()),
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


def dedup_summary(result: pa.Table) -> dict:
    counts = pc.value_counts(result.column("reason")).to_pylist()
    return {
        "rows_in": result.num_rows,
        "rows_out": int(pc.sum(result.column("keep")).as_py() or 0),
        **{f"reason_{c['values']}": c["counts"] for c in counts},
    }


def run_exact_dedup(image_records: list[Path], stage_dir: StageDir) -> dict:
    """Write ``<stage_dir>/part-00000.parquet`` and stats for the given IMAGE_RECORD shards."""
    if stage_dir.is_complete():
        return stage_dir.read_stats()
    start = time.perf_counter()
    result = exact_duplicates(read_ok_hashes(image_records))
    write_parquet_atomic(stage_dir.path / OUTPUT, result, HASH_DEDUP_SCHEMA)
    stats = {"stage": stage_dir.path.name, **dedup_summary(result)}
    stats["seconds"] = round(time.perf_counter() - start, 3)
    stage_dir.write_stats(stats)
    stage_dir.mark_complete()
    logger.info("exact dedup: %d of %d images kept", stats["rows_out"], stats["rows_in"])
    return stats
