"""Density scores in the partitioned search: one partition is the exact search, several are an
approximation whose densities can only be lower, and on planted topics they are close."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.index.knn import DensityScore, knn_edges
from curation.index.partition import (
    density_pairs_within_partition,
    partitioned_search,
    train_coarse_centroids,
)
from schemas import DEDUP_EDGE_SCHEMA, validate
from tests.curation.index.test_partition import clustered_with_copies

DENSITY = DensityScore((5, 20))


def index_pairs(table: pa.Table, keys: list[str]) -> set[tuple[int, int]]:
    row = {key: i for i, key in enumerate(keys)}
    src, dst = table["src_key"].to_pylist(), table["dst_key"].to_pylist()
    return {(row[a], row[b]) for a, b in zip(src, dst)}


@pytest.fixture(scope="module")
def topics():
    x = clustered_with_copies(0)
    keys = [f"img-{i:05d}" for i in range(len(x))]
    exact = knn_edges(x, 64, 0.1, density=DENSITY, index="flat")
    return x, keys, exact


def test_one_partition_is_the_exact_search(topics):
    x, keys, exact = topics
    centroids = train_coarse_centroids(x, 1)
    edges, density = partitioned_search(keys, x, centroids, 1, 64, 0.1, DENSITY)
    np.testing.assert_array_equal(density, exact.density)
    assert index_pairs(edges, keys) == set(zip(exact.i.tolist(), exact.j.tolist()))


def test_partitioned_densities_are_lower_bounds_and_close_on_planted_topics(topics):
    x, keys, exact = topics
    reference = set(zip(exact.i.tolist(), exact.j.tolist()))
    for partitions, replicas in ((4, 2), (8, 2)):
        centroids = train_coarse_centroids(x, partitions, seed=0)
        edges, density = partitioned_search(keys, x, centroids, replicas, 64, 0.1, DENSITY)
        # Fewer candidates than the whole pool: never a higher density than the exact one.
        assert np.all(density <= exact.density)
        assert np.mean(density == exact.density) >= 0.97
        assert np.max(exact.density - density) < 0.15
        found = index_pairs(edges, keys)
        assert len(found ^ reference) <= 0.01 * len(reference)


def test_a_partition_emits_candidates_and_each_members_nearest_neighbours():
    x = clustered_with_copies(1, n_topics=2, per_topic=60)
    keys = pa.array([f"k{i:03d}" for i in range(len(x))])
    table = density_pairs_within_partition(keys, x, 64, 0.1, DENSITY)
    validate(table, DEDUP_EDGE_SCHEMA)
    # Its rows alone give back each member's exact density over the partition.
    _, density = partitioned_search(keys, x, train_coarse_centroids(x, 1), 1, 64, 0.1, DENSITY)
    exact = knn_edges(x, 64, 0.1, density=DENSITY, index="flat")
    np.testing.assert_array_equal(density, exact.density)
    # Every accepted pair was emitted: candidates are a superset of the final edges.
    emitted = index_pairs(table, keys.to_pylist())
    assert set(zip(exact.i.tolist(), exact.j.tolist())) <= emitted
