"""The centroid-partitioned search gives the global search's pairs, each once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.index.knn import edges_table, knn_pairs
from curation.index.partition import (
    assign_nearest,
    dedup_edges,
    pairs_within_partition,
    partition_members,
    partitioned_pairs,
    train_coarse_centroids,
)
from schemas import DEDUP_EDGE_SCHEMA, validate


def clustered_with_copies(seed: int, n_topics: int = 12, per_topic: int = 250, d: int = 32):
    """Topics (blobs) of images, each topic holding copy groups of 2-4 near-identical vectors,
    the way real descriptors crowd: copies are close, topics are apart."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_topics, d))
    rows = []
    for t in range(n_topics):
        members = topics[t] + 1.0 * rng.standard_normal((per_topic, d))
        for start in range(0, 60, 4):  # 15 groups of up to 4 copies per topic
            size = int(rng.integers(2, 5))
            members[start + 1 : start + size] = members[start] + 0.05 * rng.standard_normal(
                (size - 1, d)
            )
        rows.append(members)
    x = np.concatenate(rows).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def key_pairs(table: pa.Table) -> list[tuple[str, str]]:
    return list(zip(table["src_key"].to_pylist(), table["dst_key"].to_pylist()))


@pytest.mark.parametrize("seed", [0, 1])
def test_union_of_partitions_equals_the_global_exact_search(seed):
    x = clustered_with_copies(seed)
    keys = [f"img{r:05d}" for r in range(len(x))]
    threshold = 0.9
    i, j, sim = knn_pairs(x, k=16, threshold=threshold, index="flat")
    global_edges = edges_table(keys, i, j, sim)
    assert global_edges.num_rows > 100  # the planted copies are found

    sample = x[np.random.default_rng(seed).choice(len(x), 1500, replace=False)]
    centroids = train_coarse_centroids(sample, 24, seed=seed)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    edges = partitioned_pairs(keys, x, centroids, r=2, k=16, threshold=threshold)
    validate(edges, DEDUP_EDGE_SCHEMA)
    assert key_pairs(edges) == key_pairs(global_edges)
    assert edges["similarity"].to_pylist() == global_edges["similarity"].to_pylist()

    # With r = 1 a pair split by a cell boundary is lost: r >= 2 is what brings it back.
    alone = partitioned_pairs(keys, x, centroids, r=1, k=16, threshold=threshold)
    assert set(key_pairs(alone)) < set(key_pairs(global_edges))


def test_partitions_overlap_yet_each_pair_is_emitted_once():
    x = clustered_with_copies(2, n_topics=4, per_topic=200)
    keys = pa.array([f"k{r:04d}" for r in range(len(x))])
    centroids = train_coarse_centroids(x, 6, seed=0)
    assignment = assign_nearest(x, centroids, r=3)
    assert assignment.shape == (len(x), 3)
    assert all(len(set(row)) == 3 for row in assignment.tolist())  # r distinct cells
    parts = partition_members(assignment)
    assert sum(len(rows) for _, rows in parts) == 3 * len(x)
    raw = pa.concat_tables(
        pairs_within_partition(keys.take(pa.array(rows)), x[rows], 8, 0.9) for _, rows in parts
    )
    unique = dedup_edges(raw)
    assert raw.num_rows > unique.num_rows  # overlapping partitions did emit pairs twice
    pairs = key_pairs(unique)
    assert len(pairs) == len(set(pairs)) and pairs == sorted(pairs)
    assert all(src < dst for src, dst in pairs)


def test_assign_nearest_orders_centroids_by_similarity():
    centroids = np.eye(4, dtype=np.float32)
    vectors = np.array([[0.1, 0.9, 0.3, 0.0], [0.1, 0.0, -1.0, 0.2]], dtype=np.float32)
    assert assign_nearest(vectors, centroids, r=2).tolist() == [[1, 2], [3, 0]]
    with pytest.raises(ValueError, match="r must be"):
        assign_nearest(vectors, centroids, r=5)


def test_dedup_edges_of_nothing_is_an_empty_edge_table():
    empty = dedup_edges(DEDUP_EDGE_SCHEMA.empty_table())
    assert empty.num_rows == 0 and empty.schema.equals(DEDUP_EDGE_SCHEMA)
