"""Near-exact dedup: images whose perceptual hashes differ in at most ``max_distance`` bits.

A global stage (run by the ingest job through :func:`curation.runner.run_table_stage`) over the
IMAGE_HASH rows of every image that survived exact dedup. Pairs within the
distance are found by a faiss binary index range search (a flat index, or a multi-hash index beyond
``flat_index_limit`` images: 8 tables of 8 bits with ``max_distance // 8`` bit flips finds every
pair within the distance by the pigeonhole principle), never by a Python loop over pairs. Pairs are
edges; each connected component keeps its first key and records the others as ``near_duplicate``
of it, with their Hamming distance to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import DEDUP_REASON_KEPT, HASH_DEDUP_SCHEMA

REASON_NEAR = "near_duplicate"
QUERY_BATCH = 65_536


@dataclass(frozen=True)
class NearDedupConfig:
    enabled: bool = True
    max_distance: int = 6  # of 64 bits; re-encodes and mild resizes of the synthetic web stay <= 4
    flat_index_limit: int = 200_000  # above this many images, use a multi-hash index


def hash_codes(phash: np.ndarray) -> np.ndarray:
    """int64 hashes -> (n, 8) uint8 codes, top bit first (faiss binary vectors)."""
    return np.ascontiguousarray(
        np.asarray(phash, dtype=np.int64).astype(">i8").view(np.uint8)
    ).reshape(-1, 8)


def _index(codes: np.ndarray, max_distance: int, multi_hash: bool):
    import faiss

    if multi_hash:
        index = faiss.IndexBinaryMultiHash(64, 8, 8)
        index.nflip = max_distance // 8
    else:
        index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    return index


def close_pairs(codes: np.ndarray, max_distance: int, *, multi_hash: bool = False) -> np.ndarray:
    """``(m, 3)`` int64 rows ``(i, j, distance)`` with i < j for every pair within the distance."""
    if len(codes) < 2:
        return np.zeros((0, 3), dtype=np.int64)
    index = _index(codes, max_distance, multi_hash)
    found = []
    for start in range(0, len(codes), QUERY_BATCH):
        query = codes[start : start + QUERY_BATCH]
        limits, distances, labels = index.range_search(query, max_distance + 1)  # radius is strict
        rows = np.repeat(np.arange(start, start + len(query)), np.diff(limits).astype(np.int64))
        pairs = np.stack([rows, labels.astype(np.int64), distances.astype(np.int64)], axis=1)
        found.append(pairs[pairs[:, 0] < pairs[:, 1]])
    return np.concatenate(found)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Each node's component root: the smallest index in its connected component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)  # first occurrence = smallest index
    return first[labels]


def near_duplicates(
    table: pa.Table,
    max_distance: int,
    *,
    multi_hash: bool | None = None,
    flat_index_limit: int = 200_000,
) -> pa.Table:
    """HASH_DEDUP rows for a (key, phash) table with distinct keys."""
    table = table.select(["key", "phash"]).sort_by("key")
    n = table.num_rows
    codes = hash_codes(table.column("phash").to_numpy())
    use_multi_hash = n > flat_index_limit if multi_hash is None else multi_hash
    pairs = close_pairs(codes, max_distance, multi_hash=use_multi_hash)
    roots = _components(n, pairs)
    keep = roots == np.arange(n)
    keys = table.column("key")
    distances = np.unpackbits(codes ^ codes[roots], axis=1).sum(axis=1)
    return pa.table(
        {
            "key": keys,
            "keep": pa.array(keep, pa.bool_()),
            "duplicate_of": pa.array(
                [None if k else key for k, key in zip(keep, pc.take(keys, roots).to_pylist())],
                pa.string(),
            ),
            "reason": pa.array(np.where(keep, DEDUP_REASON_KEPT, REASON_NEAR), pa.string()),
            "hamming_distance": pa.array(
                [None if k else int(d) for k, d in zip(keep, distances)], pa.int32()
            ),
        },
        schema=HASH_DEDUP_SCHEMA,
    )


def read_hashes(hash_shards: list[Path], excluded: Path | None = None) -> pa.Table:
    """(key, phash) of IMAGE_HASH shards, leaving out the keys a HASH_DEDUP file does not keep
    (the exact duplicates, which need no second look)."""
    hashes = [pq.read_table(p, columns=["key", "phash"]) for p in hash_shards]
    table = (
        pa.concat_tables(hashes)
        if hashes
        else pa.table({"key": pa.array([], pa.string()), "phash": pa.array([], pa.int64())})
    )
    if excluded is not None:
        dropped = pq.read_table(excluded, columns=["key", "keep"])
        dropped = dropped.filter(pc.invert(dropped.column("keep"))).column("key")
        table = table.filter(
            pc.invert(pc.is_in(table.column("key"), value_set=dropped.combine_chunks()))
        )
    return table
