"""The Spark partitioned pair search (curation/engines/spark_pairs.py) with known cells: pairs that
straddle a cell boundary meet in a shared partition at the default replicas, and density scores
merged across an image's partitions equal the pool-wide neighbour density where the partitions
cover its neighbourhood, and the in-process partitioned search's result everywhere."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.index.calibration import neighbour_density
from curation.index.knn import DensityScore, knn_pairs
from curation.index.partition import assign_nearest, partitioned_search

DIM, N_TOPICS, PER_TOPIC = 64, 6, 80
DENSITY = DensityScore((5, 20), 1.0)
DENSITY_THRESHOLD = 0.3


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def cells():
    """Images around orthonormal topics (the cells), a few copy groups inside a topic, and pairs
    that straddle two topics: A leans to topic t, B to topic t + 1, A.B ~ 0.87."""
    rng = np.random.default_rng(4)
    topics = np.linalg.qr(rng.standard_normal((DIM, N_TOPICS)))[0].T.astype(np.float32)

    def off_topics(n: int) -> np.ndarray:  # unit directions orthogonal to every topic
        z = rng.standard_normal((n, DIM))
        return unit(z - (z @ topics.T) @ topics)

    owner = np.repeat(np.arange(N_TOPICS), PER_TOPIC)
    x = unit(0.55 * topics[owner] + 0.83 * off_topics(len(owner)))
    for g in range(8):  # copies of image 10 g
        base = 10 * g
        x[base + 1 : base + 3] = unit(x[base] + 0.5 * off_topics(2))
    straddlers = []
    for t in range(N_TOPICS):
        u, (na, nb) = off_topics(1)[0], off_topics(2)
        a = unit(0.5 * topics[t] + 0.3 * topics[(t + 1) % N_TOPICS] + 0.75 * u + 0.3 * na)
        b = unit(0.3 * topics[t] + 0.5 * topics[(t + 1) % N_TOPICS] + 0.75 * u + 0.3 * nb)
        x = np.vstack([x, a[None], b[None]])
        straddlers.append((len(x) - 2, len(x) - 1))
    keys = [f"k{i:04d}" for i in range(len(x))]
    return keys, x, topics, straddlers


def pool_frame(spark, keys, x):
    table = pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "embedding": pa.array(list(x), pa.list_(pa.float32())),
            "eval_set": pa.nulls(len(keys), pa.string()),
        }
    )
    return spark.createDataFrame(table)


def test_pairs_across_a_cell_boundary_meet_at_the_default_replicas(spark_session, cells):
    from curation.engines.spark_dedup import SparkDedupConfig
    from curation.engines.spark_pairs import assign_partitions, distinct_pairs, partition_pairs

    keys, x, topics, straddlers = cells
    replicas = SparkDedupConfig().replicas
    nearest = assign_nearest(x, topics, 1)[:, 0]
    # The straddling pairs really straddle: their members' nearest cells differ.
    assert all(nearest[a] != nearest[b] for a, b in straddlers)
    assigned = assign_partitions(pool_frame(spark_session, keys, x), topics, replicas)
    pairs = distinct_pairs(partition_pairs(assigned, 64, 0.6, 0.45), "src_key", "dst_key")
    found = {(r["src_key"], r["dst_key"]): r["similarity"] for r in pairs.collect()}
    i, j, sim = knn_pairs(x, 64, 0.6, index="flat")
    exact = {(keys[a], keys[b]): s for a, b, s in zip(i, j, sim)}
    assert {(keys[a], keys[b]) for a, b in straddlers} <= set(exact)
    assert len(exact) > len(straddlers) + 8
    assert found == exact  # the same pairs, the same similarities


@pytest.fixture(scope="module")
def density_run(spark_session, cells):
    from curation.engines.spark_pairs import (
        assign_partitions,
        density_scored_edges,
        distinct_pairs,
        partition_pairs,
    )

    keys, x, topics, _ = cells
    replicas = 2
    assigned = assign_partitions(pool_frame(spark_session, keys, x), topics, replicas)
    rows = partition_pairs(assigned, 64, DENSITY_THRESHOLD, 0.45, DENSITY)
    edges, densities = density_scored_edges(
        distinct_pairs(rows, "src_key", "dst_key"), DENSITY_THRESHOLD, DENSITY
    )
    found_edges = {(r["src_key"], r["dst_key"]): r["similarity"] for r in edges.collect()}
    found_density = {r["key"]: r["density"] for r in densities.collect()}
    return replicas, found_edges, np.array([found_density[k] for k in keys], dtype=np.float32)


def test_spark_density_is_the_neighbour_density_where_partitions_cover_it(cells, density_run):
    keys, x, topics, _ = cells
    replicas, _, density = density_run
    exact = neighbour_density(x, ranks=DENSITY.ranks)
    # Covered: each of an image's 20 nearest neighbours shares one of its partitions.
    assignment = assign_nearest(x, topics, replicas)
    scores = x @ x.T
    np.fill_diagonal(scores, -np.inf)
    nearest = np.argsort(-scores, axis=1)[:, : DENSITY.ranks[1]]
    shared = (assignment[:, None, :, None] == assignment[nearest][:, :, None, :]).any(axis=(2, 3))
    covered = shared.all(axis=1)
    assert covered.mean() > 0.9 and not covered.all()  # both cases are exercised
    np.testing.assert_allclose(density[covered], exact[covered], atol=1e-5)
    # A neighbour outside every partition of the image can only lower its density.
    assert np.all(density[~covered] <= exact[~covered] + 1e-6)


def test_spark_density_edges_equal_the_in_process_partitioned_search(cells, density_run):
    keys, x, topics, _ = cells
    replicas, found_edges, density = density_run
    edges, reference_density = partitioned_search(
        keys, x, topics, replicas, 64, DENSITY_THRESHOLD, DENSITY
    )
    reference = {
        (s, d): v
        for s, d, v in zip(
            edges["src_key"].to_pylist(),
            edges["dst_key"].to_pylist(),
            edges["similarity"].to_pylist(),
        )
    }
    assert len(reference) > 20
    assert found_edges == reference
    np.testing.assert_allclose(density, reference_density, atol=1e-6)
