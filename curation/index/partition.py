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

**Density scores** (:class:`curation.index.knn.DensityScore`): an image's density is the mean
similarity of its neighbours ranked ``lo..hi``, and no partition sees all of them. Each partition
emits (:func:`density_pairs_within_partition`), as plain DEDUP_EDGE rows with their cosine, every
member's ``hi`` nearest neighbours in the partition and every candidate pair whose score could pass
once the densities are known (scored with densities no further neighbour can lower). After the
edges of all partitions are put together (:func:`dedup_edges`), :func:`score_partition_edges`
takes each image's ``hi`` most similar pairs over all its partitions, which are exactly its ``hi``
nearest neighbours in the union of the partitions it belongs to (merged across its replicas), and
scores every pair with those densities. This is an approximation of the pool-wide density: a
neighbour outside all of an image's partitions is missed, so a density can only come out lower
than the exact one, and a score higher (``tests/curation/index/test_partition_density.py``
measures how close it is). With ``k < hi`` a partition's edges may come from its ``hi`` nearest.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.index.knn import (
    DensityScore,
    density_from_pairs,
    density_scores,
    edges_table,
    knn_edges,
    knn_pairs,
    normalized,
    train_centroids,
)
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


def density_pairs_within_partition(
    keys, vectors: np.ndarray, k: int, threshold: float, density: DensityScore
) -> pa.Table:
    """DEDUP_EDGE rows of one partition for density scores: each member's ``hi`` nearest
    neighbours in the partition, and the pairs among each member's ``k`` nearest whose score may
    exceed ``threshold`` once densities are merged (:func:`score_partition_edges` decides)."""
    found = knn_edges(
        vectors, k, threshold, density=density, exact_score=False, index="flat", use_gpu=False
    )
    near_i, near_j, near_sim = found.neighbours
    n = len(vectors)
    codes = np.concatenate([found.i * n + found.j, near_i * n + near_j])
    codes, first = np.unique(codes, return_index=True)
    sim = np.concatenate([found.similarity, near_sim])[first]
    return edges_table(keys, codes // n, codes % n, sim)


def score_partition_edges(
    keys, edges: pa.Table, threshold: float, density: DensityScore, with_score: bool = False
) -> tuple[pa.Table, np.ndarray]:
    """The pairs over ``threshold`` by density score among the partitions' merged rows
    (``edges``: :func:`density_pairs_within_partition` outputs after :func:`dedup_edges`), and
    each key's density (float32, in ``keys`` order), taken from its pairs in ``edges``;
    ``with_score``: the pairs as DEDUP_CANDIDATE rows (their score beside the cosine)."""
    keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    n = len(keys)
    src = pc.index_in(edges["src_key"], value_set=keys)
    dst = pc.index_in(edges["dst_key"], value_set=keys)
    if src.null_count or dst.null_count:
        raise ValueError("partition edges name keys that are not in the pool")
    i = src.to_numpy(zero_copy_only=False).astype(np.int64)
    j = dst.to_numpy(zero_copy_only=False).astype(np.int64)
    sim = edges["similarity"].to_numpy().astype(np.float32)
    densities, _ = density_from_pairs(n, i, j, sim, density.ranks)
    scores = density_scores(sim, densities[i], densities[j], density.beta)
    keep = scores > np.float32(threshold)
    score = scores[keep] if with_score else None
    return edges_table(keys, i[keep], j[keep], sim[keep], score), densities


def dedup_edges(edges: pa.Table) -> pa.Table:
    """One row per (src_key, dst_key), sorted: the partitions' outputs put together."""
    if edges.num_rows == 0:
        return edges.cast(DEDUP_EDGE_SCHEMA)
    unique = edges.group_by(["src_key", "dst_key"]).aggregate([("similarity", "max")])
    unique = pa.table(
        [unique["src_key"], unique["dst_key"], unique["similarity_max"]], schema=DEDUP_EDGE_SCHEMA
    )
    return unique.sort_by([("src_key", "ascending"), ("dst_key", "ascending")])


def partitioned_search(
    keys,
    vectors: np.ndarray,
    centroids: np.ndarray,
    r: int,
    k: int,
    threshold: float,
    density: DensityScore | None = None,
) -> tuple[pa.Table, np.ndarray | None]:
    """In-process run of the partitioned search: assign, search each partition, dedup edges (and
    with ``density``, score them with the merged densities). Returns the edges over the threshold
    and, with ``density``, each vector's merged density."""
    keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    x = normalized(vectors)
    parts = []
    for _, rows in partition_members(assign_nearest(x, centroids, r)):
        if len(rows) < 2:
            continue
        members = pc.take(keys, pa.array(rows))
        if density is None:
            parts.append(pairs_within_partition(members, x[rows], k, threshold))
        else:
            parts.append(density_pairs_within_partition(members, x[rows], k, threshold, density))
    merged = dedup_edges(pa.concat_tables(parts)) if parts else DEDUP_EDGE_SCHEMA.empty_table()
    if density is None:
        return merged, None
    return score_partition_edges(keys, merged, threshold, density)


def partitioned_pairs(
    keys,
    vectors: np.ndarray,
    centroids: np.ndarray,
    r: int,
    k: int,
    threshold: float,
    density: DensityScore | None = None,
) -> pa.Table:
    """The edges of :func:`partitioned_search`."""
    return partitioned_search(keys, vectors, centroids, r, k, threshold, density)[0]
