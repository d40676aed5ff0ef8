"""The centroid-partitioned pair search that Spark and Ray run one partition per task.

No single process holds all vectors: a coarse spherical k-means is trained on a sample (at the
driver), each vector is sent to its ``r`` nearest centroids (r >= 2, so a pair that straddles a
cell boundary still meets in a shared partition), and each partition is searched exactly on its
own (:func:`pairs_within_partition`, what a Spark ``applyInArrow`` or a Ray task runs per centroid
group). A pair found in several partitions comes back once per partition with the same similarity
(:func:`curation.index.knn.pair_similarities` does not depend on the partition), and
:func:`dedup_edges` keeps one row of each.

The union equals the global search when every pair over the threshold shares one of its r cells
and k does not bind (neighbours are the k nearest *within the partition*, so a partition can emit a
pair the global top-k would have cut). :func:`partitioned_pairs` is the in-process reference of
the whole procedure.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.index.knn import edges_table, knn_pairs, normalized, train_centroids
from schemas import DEDUP_EDGE_SCHEMA


def train_coarse_centroids(
    sample: np.ndarray, n_centroids: int, seed: int = 0, *, iterations: int = 10
) -> np.ndarray:
    """``(n_centroids, d)`` unit-norm centroids: faiss spherical k-means on a sample."""
    return train_centroids(sample, n_centroids, seed=seed, iterations=iterations)


def assign_nearest(vectors: np.ndarray, centroids: np.ndarray, r: int = 2) -> np.ndarray:
    """``(n, r)`` int64: the ``r`` nearest centroids (by cosine) of each vector, nearest first."""
    import faiss

    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if not 1 <= r <= len(centroids):
        raise ValueError(f"r must be in [1, {len(centroids)}] (the centroids), got {r}")
    x = normalized(vectors)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    _, nearest = index.search(x, r)
    return nearest.astype(np.int64)


def partition_members(assignment: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(centroid, member row indices ascending)`` for every non-empty partition, by centroid."""
    assignment = np.asarray(assignment, dtype=np.int64)
    rows = np.repeat(np.arange(len(assignment)), assignment.shape[1])
    cells = assignment.reshape(-1)
    order = np.lexsort((rows, cells))
    cells, rows = cells[order], rows[order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    ends = np.r_[starts[1:], len(cells)]
    return [(int(cells[s]), rows[s:e]) for s, e in zip(starts, ends)]


def pairs_within_partition(keys, vectors: np.ndarray, k: int, threshold: float) -> pa.Table:
    """DEDUP_EDGE rows of one partition: exact k-nearest-neighbour search among its vectors,
    pairs with cosine > ``threshold``."""
    i, j, sim = knn_pairs(vectors, k, threshold, index="flat", use_gpu=False)
    return edges_table(keys, i, j, sim)


def dedup_edges(edges: pa.Table) -> pa.Table:
    """One row per (src_key, dst_key), sorted: the partitions' outputs put together."""
    if edges.num_rows == 0:
        return edges.cast(DEDUP_EDGE_SCHEMA)
    unique = edges.group_by(["src_key", "dst_key"]).aggregate([("similarity", "max")])
    unique = pa.table(
        [unique["src_key"], unique["dst_key"], unique["similarity_max"]], schema=DEDUP_EDGE_SCHEMA
    )
    return unique.sort_by([("src_key", "ascending"), ("dst_key", "ascending")])


def partitioned_pairs(
    keys,
    vectors: np.ndarray,
    centroids: np.ndarray,
    r: int,
    k: int,
    threshold: float,
) -> pa.Table:
    """In-process run of the partitioned search: assign, search each partition, dedup edges."""
    keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    x = normalized(vectors)
    parts = [
        pairs_within_partition(pc.take(keys, pa.array(rows)), x[rows], k, threshold)
        for _, rows in partition_members(assign_nearest(x, centroids, r))
        if len(rows) > 1
    ]
    if not parts:
        return DEDUP_EDGE_SCHEMA.empty_table()
    return dedup_edges(pa.concat_tables(parts))
