"""Near-exact dedup: images whose perceptual hashes differ in at most ``max_distance`` bits.

A global stage (run by the ingest job through :func:`curation.runner.run_table_stage`) over the
IMAGE_HASH rows of every image that survived exact dedup. Pairs within the
distance are found by a faiss binary index range search (a flat index, or a multi-hash index beyond
``flat_index_limit`` images: 8 tables of 8 bits with ``max_distance // 8`` bit flips finds every
pair within the distance by the pigeonhole principle), never by a Python loop over pairs. Pairs are
edges; each group keeps its first key (key order) and records the others as ``near_duplicate`` of
it, with their Hamming distance to it.

**Chaining guard** (on by default): a group is built by
:func:`curation.index.components.greedy_star`, so an image joins a group only if it is within
``max_distance`` of the group's kept image. Plain connected components (``guard=False``, union-find
as in LVD-142M) chain: on real images, copies of different pictures in one meme template or
screenshot frame sit 4-8 bits apart and link whole families of unrelated pictures through such hub
images (issue 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.index.components import (
    component_stats,
    connected_components,
    guarded_hamming_components,
    labels_of,
)
from schemas import DEDUP_REASON_KEPT, HASH_DEDUP_SCHEMA

REASON_NEAR = "near_duplicate"
QUERY_BATCH = 65_536


@dataclass(frozen=True)
class NearDedupConfig:
    enabled: bool = True
    max_distance: int = 6  # of 64 bits; re-encodes and mild resizes of the synthetic web stay <= 4
    flat_index_limit: int = 200_000  # above this many images, use a multi-hash index
    # An image joins a group only within max_distance of the kept image (no union-find chains).
    guard: bool = True


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


def representatives(n: int, pairs: np.ndarray, max_distance: int, *, guard: bool) -> np.ndarray:
    """Each node's representative index for the ``(i, j, distance)`` pairs of :func:`close_pairs`,
    nodes ranked by index (the caller sorts by key): with ``guard``, the greedy star (every member
    within ``max_distance`` of its representative); without, the smallest index of its connected
    component."""
    i, j, distance = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    if guard:
        return guarded_hamming_components(n, i, j, distance, np.arange(n), max_distance)
    labels = connected_components(n, i, j)  # numbered by smallest member, so in index order
    _, first = np.unique(labels, return_index=True)
    return first[labels]


def near_duplicates(
    table: pa.Table,
    max_distance: int,
    *,
    guard: bool = True,
    multi_hash: bool | None = None,
    flat_index_limit: int = 200_000,
) -> pa.Table:
    """HASH_DEDUP rows for a (key, phash) table with distinct keys; ``guard``: see the module
    docstring (False: connected components, as before the guard)."""
    table = table.select(["key", "phash"]).sort_by("key")
    n = table.num_rows
    codes = hash_codes(table.column("phash").to_numpy())
    use_multi_hash = n > flat_index_limit if multi_hash is None else multi_hash
    pairs = close_pairs(codes, max_distance, multi_hash=use_multi_hash)
    roots = representatives(n, pairs, max_distance, guard=guard)
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


def near_dedup_component_stats(result: pa.Table, top: int = 10) -> dict:
    """Group-size histogram and the largest groups' keys of a :func:`near_duplicates` result
    (:func:`curation.index.components.component_stats`), for the stage's stats file."""
    keys = result.column("key").to_pylist()
    index = {key: position for position, key in enumerate(keys)}
    kept_as = [
        index[key if rep is None else rep]
        for key, rep in zip(keys, result.column("duplicate_of").to_pylist())
    ]
    return component_stats(labels_of(np.asarray(kept_as, dtype=np.int64)), keys, top)


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
