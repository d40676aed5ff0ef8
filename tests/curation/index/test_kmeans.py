"""Spherical k-means, batched assignment and hierarchical balanced sampling (issue 15)."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pyarrow as pa
import pytest

from curation.index import kmeans
from curation.index import lloyd as lloyd_module
from curation.index.kmeans import (
    ClusterLevel,
    ClusterTree,
    HierarchicalKMeansConfig,
    KMeansConfig,
    assign,
    assignment_table,
    balanced_sample,
    hierarchical_kmeans,
    scaled_levels,
    train_kmeans,
)
from curation.index.lloyd import _hartigan_moves, _Lloyd, lloyd
from schemas import CLUSTER_ASSIGNMENT_SCHEMA, SchemaError


def blobs(sizes, d: int = 16, noise: float = 0.1, seed: int = 0):
    """Unit vectors around ``len(sizes)`` random unit centres (``sizes[c]`` around centre c), and
    each vector's blob. Noise of norm ~``noise``: random centres sit ~1.4 apart."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[labels] + noise * rng.standard_normal((len(labels), d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def purity(cluster_id: np.ndarray, labels: np.ndarray) -> float:
    """Share of points in their cluster's majority blob."""
    majority = sum(np.bincount(labels[cluster_id == c]).max() for c in np.unique(cluster_id))
    return majority / len(labels)


def entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# -- flat k-means ------------------------------------------------------------------------------


def test_kmeans_recovers_separated_blobs():
    x, labels = blobs([300] * 10)
    centroids = train_kmeans(x, KMeansConfig(k=10, seed=1))
    assert centroids.shape == (10, 16) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    cluster_id, _ = assign(x, centroids)
    assert purity(cluster_id, labels) == 1.0
    assert len(np.unique(cluster_id)) == 10


def test_kmeans_trains_on_a_sample_when_the_pool_is_larger(monkeypatch):
    trained_on = []
    real = kmeans.lloyd

    def spy(sample, centroids, iterations, **kwargs):
        trained_on.append(len(sample))
        return real(sample, centroids, iterations, **kwargs)

    monkeypatch.setattr(kmeans, "lloyd", spy)
    x, labels = blobs([400] * 10, seed=2)
    centroids = train_kmeans(x, KMeansConfig(k=10, max_train_points=500, seed=3))
    assert trained_on == [500]
    assert purity(assign(x, centroids)[0], labels) == 1.0
    train_kmeans(x, KMeansConfig(k=10, max_train_points=4000))
    assert trained_on[-1] == 4000  # the whole pool fits: no sample


def test_default_training_sample_is_256_per_centroid_capped():
    assert KMeansConfig(k=10).train_points == 2560
    assert KMeansConfig(k=100_000).train_points == kmeans.MAX_TRAIN_POINTS
    assert KMeansConfig(k=10, max_train_points=50).train_points == 50


def test_kmeans_is_deterministic_for_a_seed():
    x, _ = blobs([200] * 6, noise=0.6, seed=4)
    first = train_kmeans(x, KMeansConfig(k=12, seed=7, max_train_points=900))
    again = train_kmeans(x, KMeansConfig(k=12, seed=7, max_train_points=900))
    other = train_kmeans(x, KMeansConfig(k=12, seed=8, max_train_points=900))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_kmeans_plus_plus_beats_random_init_on_blobs():
    """Under plain Lloyd, random initial centroids leave blobs merged (the reason k-means++ is
    the default); the split/merge moves recover every blob from a random start too."""
    pure = {"kmeans++": 0, "random": 0, "random, reassigned": 0}
    for seed in range(5):
        x, labels = blobs([300] * 10, seed=seed)
        for name, init, reassign in [
            ("kmeans++", "kmeans++", False),
            ("random", "random", False),
            ("random, reassigned", "random", True),
        ]:
            config = KMeansConfig(k=10, seed=seed, init=init, reassign=reassign)
            pure[name] += int(purity(assign(x, train_kmeans(x, config))[0], labels) == 1.0)
    print("runs with every blob recovered (of 5):", pure)
    assert pure["kmeans++"] == 5 and pure["random"] < 5 and pure["random, reassigned"] == 5


def bad_start(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One row of each blob but the last, and a second row of blob 0: Lloyd from here keeps
    blob 0 split between two centroids and the last blob sharing a centroid with another."""
    first = [np.flatnonzero(labels == blob)[0] for blob in range(labels.max())]
    return x[first + [np.flatnonzero(labels == 0)[-1]]]


@pytest.mark.parametrize("spherical", [True, False])
def test_reassignment_recovers_blobs_from_a_bad_start(spherical):
    x, labels = blobs([300] * 10, seed=9)
    start = bad_start(x, labels)
    plain = lloyd(x, start, 20, spherical=spherical, reassign=False)
    moved = lloyd(x, start, 20, spherical=spherical, reassign=True)
    plain_ids, plain_dist = assign(x, plain)
    moved_ids, moved_dist = assign(x, moved)
    assert purity(plain_ids, labels) < 1.0  # the bad start is a local minimum of Lloyd
    assert purity(moved_ids, labels) == 1.0 and len(np.unique(moved_ids)) == 10
    assert moved_dist.sum() < 0.5 * plain_dist.sum()


def iteration_logs(caplog) -> list[tuple]:
    """The arguments of Lloyd's per-iteration debug lines: (iteration, cost, empty clusters,
    split/merge moves, rows moved by Hartigan)."""
    return [
        r.args
        for r in caplog.records
        if r.name == "curation.index.lloyd" and r.msg.startswith("iteration")
    ]


def iteration_costs(caplog) -> list[float]:
    return [args[1] for args in iteration_logs(caplog)]


@pytest.mark.parametrize("spherical", [True, False])
def test_split_merge_moves_never_raise_the_objective(caplog, spherical):
    """A move is made only when its split gain exceeds its merge cost, both exact on the current
    partition, so the cost of each assignment is never above the one before."""
    caplog.set_level(logging.DEBUG, logger="curation.index.lloyd")
    x, labels = blobs([400, 200, 100, 50, 25, 25, 10, 10] * 3, noise=0.8, seed=10)
    start = x[np.random.default_rng(0).choice(len(x), 30, replace=False)]
    centroids = lloyd(x, start, 15, spherical=spherical, seed=3, hartigan=False)
    costs = iteration_costs(caplog)
    moves = sum(args[3] for args in iteration_logs(caplog))
    assert len(costs) == 15 and moves > 0
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(costs, costs[1:]))
    final = assign(x, centroids)[1].sum(dtype=np.float64)
    assert final <= costs[-1] * (1 + 1e-6)
    plain = lloyd(x, start, 15, spherical=spherical, reassign=False)
    assert final < assign(x, plain)[1].sum(dtype=np.float64)


def test_hartigan_moves_are_exactly_the_rows_whose_single_move_lowers_the_cost():
    """Hartigan's criterion, checked row by row against the cost recomputed from scratch after
    moving that row alone to its second-nearest cluster (centroids: the partition's means)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    part = np.repeat(np.arange(6), [2, 3, 5, 10, 15, 25])
    means = np.stack([x[part == c].mean(axis=0) for c in range(6)])
    squared = ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    nearest = np.argsort(squared, axis=1)[:, :2]
    labels = nearest.copy()
    labels[:, 0] = part  # each row's own cluster first, its nearest other cluster second
    labels[:, 1] = np.where(nearest[:, 0] == part, nearest[:, 1], nearest[:, 0])
    distance = np.take_along_axis(squared, labels, axis=1).astype(np.float32)

    def cost(assignment):
        return sum(
            ((x[assignment == c] - x[assignment == c].mean(axis=0)) ** 2).sum()
            for c in set(assignment)
        )

    before = cost(part)
    moves = _hartigan_moves(labels, distance, 6)
    for row in range(len(x)):
        moved = part.copy()
        moved[row] = labels[row, 1]
        lowers = np.bincount(part)[part[row]] > 1 and cost(moved) < before - 1e-9
        assert moves[row] == lowers, row
    assert 0 < moves.sum() < len(x)


def test_hartigan_moves_lower_the_cost_lloyd_stops_at():
    x, _ = blobs([400, 200, 100, 50, 25, 25, 10, 10] * 3, noise=0.8, seed=13)
    start = x[np.random.default_rng(1).choice(len(x), 30, replace=False)]
    for spherical in (True, False):
        plain = lloyd(x, start, 20, spherical=spherical, reassign=False)
        moved = lloyd(x, start, 20, spherical=spherical, reassign=False, hartigan=True)
        assert assign(x, moved)[1].sum() < assign(x, plain)[1].sum()


def test_lloyd_stops_once_the_partition_is_fixed(caplog):
    caplog.set_level(logging.DEBUG, logger="curation.index.lloyd")
    x, labels = blobs([300] * 10, seed=14)
    start = x[[np.flatnonzero(labels == blob)[0] for blob in range(10)]]  # one row per blob
    short = lloyd(x, start, 30, reassign=False)
    assert any("converged after" in r.getMessage() for r in caplog.records)
    assert len(iteration_costs(caplog)) < 30
    np.testing.assert_array_equal(short, lloyd(x, start, 60, reassign=False))


@pytest.mark.parametrize("spherical", [True, False])
def test_pruned_search_finds_the_nearest_centroid_of_every_row(spherical):
    """The pruned search compares a row with its reference cluster's neighbouring centroids
    only where the triangle inequality proves that enough: its nearest centroid is the full
    search's for every row, whatever the reference partition (a stale one included)."""
    x, _ = blobs([60] * 120, d=24, noise=0.6, seed=21)
    rng = np.random.default_rng(2)
    centroids = x[rng.choice(len(x), 100, replace=False)]
    run = _Lloyd(x, 100, spherical, seed=0, batch_size=1000, use_gpu=False)
    full_labels, full_distance = run.assign(centroids)
    stale = full_labels[:, 0].copy()
    moved = rng.random(len(x)) < 0.3
    stale[moved] = rng.integers(100, size=int(moved.sum()))
    for reference in (full_labels[:, 0], stale):
        run.sort_rows(reference)
        labels, distance, held = run.assign_pruned(centroids)
        np.testing.assert_allclose(distance[:, 0], full_distance[:, 0], rtol=1e-4, atol=1e-5)
        assert (labels[:, 0] == full_labels[:, 0]).mean() > 0.999  # ties aside
        assert (distance[:, 1] >= distance[:, 0]).all() and (labels[:, 1] != labels[:, 0]).all()
        assert 0 < held < 1


def test_pruned_search_where_the_bound_holds_for_no_row(monkeypatch):
    """Structureless rows and one candidate: no row is proven, and the full search of all of
    them (in the sorted order of the reference partition) still lands on the right rows."""
    monkeypatch.setattr(lloyd_module, "CANDIDATES", 1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = x[rng.choice(len(x), 80, replace=False)]
    run = _Lloyd(x, 80, True, seed=0, batch_size=700, use_gpu=False)
    full_labels, full_distance = run.assign(centroids)
    run.sort_rows(rng.integers(80, size=len(x)))
    labels, distance, held = run.assign_pruned(centroids)
    assert held == 0.0
    np.testing.assert_array_equal(labels, full_labels)
    np.testing.assert_allclose(distance, full_distance, rtol=1e-5, atol=1e-6)


def test_sums_after_a_sort_are_the_full_sums_of_the_current_partition():
    """Once the rows are sorted by a reference partition, sums are the reference's corrected by
    the rows that left it: the same as summing the current partition from scratch, whether a
    few rows moved or most did."""
    x, labels = blobs([50] * 40, d=12, noise=0.5, seed=23)
    run = _Lloyd(x, 40, True, seed=0, batch_size=500, use_gpu=False)
    run.sort_rows(labels)
    rng = np.random.default_rng(5)
    for share in (0.0, 0.05, 0.9):
        current = labels.copy()
        moved = rng.random(len(x)) < share
        current[moved] = rng.integers(40, size=int(moved.sum()))
        expected = np.zeros((40, 12))
        np.add.at(expected, current, x.astype(np.float64))
        np.testing.assert_allclose(run.sums(current), expected, atol=1e-4)


def test_a_run_whose_hartigan_moves_swap_rows_for_ever_still_converges(monkeypatch, caplog):
    """Simultaneous Hartigan moves can swap the same rows back and forth every iteration (seen
    on the benchmark: 20-30 rows until the last iteration). Once a round of moves stops lowering
    the cost the moves stop, and the fixed point ends the run early."""
    caplog.set_level(logging.DEBUG, logger="curation.index.lloyd")
    x, labels = blobs([300] * 10, seed=14)
    start = x[[np.flatnonzero(labels == blob)[0] for blob in range(10)]]

    calls = []

    def back_and_forth(nearest, distance, k):  # rows 0 and 1 leave and come back, over again
        calls.append(1)
        move = np.zeros(len(nearest), dtype=bool)
        move[:2] = len(calls) % 2 == 1
        return move

    monkeypatch.setattr(lloyd_module, "_hartigan_moves", back_and_forth)
    lloyd(x, start, 30, reassign=True)
    assert any("converged after" in r.getMessage() for r in caplog.records)
    assert len(iteration_costs(caplog)) < 15


def test_lloyd_with_pruned_searches_equals_lloyd_with_full_ones(monkeypatch):
    """The pruned search is exact for the nearest centroid, so plain Lloyd makes the same
    partitions and centroids with it as with a full search every iteration."""
    x, _ = blobs([80] * 100, d=24, noise=0.4, seed=22)
    start = x[np.random.default_rng(3).choice(len(x), 90, replace=False)]
    calls = []
    original = _Lloyd.assign_pruned
    monkeypatch.setattr(
        _Lloyd, "assign_pruned", lambda self, c: calls.append(1) or original(self, c)
    )
    pruned = lloyd(x, start, 12, reassign=False)
    assert len(calls) >= 5
    monkeypatch.setattr(lloyd_module, "PRUNE_MIN_K", 10**9)
    calls.clear()
    full = lloyd(x, start, 12, reassign=False)
    assert not calls
    np.testing.assert_allclose(pruned, full, atol=1e-5)


def test_free_means_are_the_means_of_the_spherical_clusters():
    """means=True: the same spherical partition, each cluster given its mean (the squared-L2
    optimum on that partition) instead of its unit centroid: lower raw inertia, same clusters."""
    x, _ = blobs([200] * 8, noise=0.8, seed=30)
    start = x[np.random.default_rng(6).choice(len(x), 8, replace=False)]
    unit_centroids = lloyd(x, start, 30)
    means = train_kmeans(x, KMeansConfig(k=8, seed=0, means=True))
    reference = train_kmeans(x, KMeansConfig(k=8, seed=0))
    nearest = assign(x, reference)[0]  # converged: the final partition
    expected = np.stack([x[nearest == c].mean(axis=0) for c in range(8)])
    np.testing.assert_allclose(means, expected, atol=1e-5)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(means / norms, reference, atol=1e-5)
    assert (norms < 1).all()
    assert assign(x, means)[1].sum() < assign(x, reference)[1].sum()
    assert np.linalg.norm(lloyd(x, start, 30, free_means=True), axis=1).max() < 1
    assert np.allclose(np.linalg.norm(unit_centroids, axis=1), 1, atol=1e-5)


def test_euclidean_mode_keeps_free_means():
    """spherical=False is plain k-means on the unit rows: each centroid is the mean of its rows
    (shorter than 1), which lowers the squared-L2 cost below the spherical centroids'."""
    x, _ = blobs([300] * 10, noise=0.3, seed=11)
    free = train_kmeans(x, KMeansConfig(k=10, seed=1, spherical=False, max_train_points=3000))
    unit = train_kmeans(x, KMeansConfig(k=10, seed=1))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert (np.linalg.norm(free, axis=1) < 0.99).all()
    ids, dist = assign(x, free)
    means = np.stack([x[ids == c].mean(axis=0) for c in range(10)])
    np.testing.assert_allclose(free, means, atol=1e-5)  # a fixed point of Lloyd's update
    assert dist.sum() < assign(x, unit)[1].sum()


# -- assignment --------------------------------------------------------------------------------


def test_assign_in_batches_equals_one_shot_and_is_the_nearest():
    rng = np.random.default_rng(5)
    vectors = 3.0 * rng.standard_normal((2000, 16)).astype(np.float32)  # not unit: assign scales
    centroids = rng.standard_normal((37, 16)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    ids, dist = assign(vectors, centroids, batch_size=2000, use_gpu=False)
    batched_ids, batched_dist = assign(vectors, centroids, batch_size=7, use_gpu=False)
    np.testing.assert_array_equal(batched_ids, ids)
    np.testing.assert_array_equal(batched_dist, dist)
    assert ids.dtype == np.int64 and dist.dtype == np.float32

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    all_sq = ((unit[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(ids, all_sq.argmin(axis=1))
    np.testing.assert_allclose(dist, all_sq.min(axis=1), atol=1e-5)
    np.testing.assert_allclose(dist, ((unit - centroids[ids]) ** 2).sum(axis=1), atol=1e-6)
    assert (dist >= 0).all()


def test_assign_by_shard_equals_the_whole_pool():
    x, _ = blobs([150] * 8, seed=6)
    centroids = train_kmeans(x, KMeansConfig(k=8))
    whole = assign(x, centroids)
    parts = [assign(part, centroids) for part in np.array_split(x, 3)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])


def test_assign_searches_one_batch_at_a_time(monkeypatch):
    queried = []

    class SpyIndex(faiss.IndexFlatL2):
        def search(self, x, k, **kwargs):
            queried.append(len(x))
            return super().search(x, k, **kwargs)

    monkeypatch.setattr(faiss, "IndexFlatL2", SpyIndex)
    x, _ = blobs([100] * 10)
    assign(x, x[:50], batch_size=128, use_gpu=False)
    assert queried == [128] * 7 + [104]


def test_assignment_table_matches_the_schema():
    ids, dist = np.array([2, 0, 1]), np.array([0.5, 0.0, 1.25])
    table = assignment_table(["a", "b", "c"], ids, dist)
    assert table.schema.equals(CLUSTER_ASSIGNMENT_SCHEMA, check_metadata=True)
    assert table.to_pydict() == {
        "key": ["a", "b", "c"],
        "cluster_id": [2, 0, 1],
        "distance": [0.5, 0.0, 1.25],
    }
    with pytest.raises(ValueError, match="same length"):
        assignment_table(["a", "b"], ids, dist)
    with pytest.raises(SchemaError, match="nulls"):
        assignment_table(pa.array(["a", None, "c"]), ids, dist)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"k": 0}, "KMeansConfig.k"),
        ({"k": 4, "niter": 0}, "KMeansConfig.niter"),
        ({"k": 4, "seed": -1}, "KMeansConfig.seed"),
        ({"k": 4, "batch_size": 0}, "KMeansConfig.batch_size"),
        ({"k": 40, "max_train_points": 39}, "KMeansConfig.max_train_points"),
        ({"k": 4, "init": "k-means||"}, "KMeansConfig.init"),
        ({"k": True}, "KMeansConfig.k"),
        ({"k": 4, "spherical": 1}, "KMeansConfig.spherical"),
        ({"k": 4, "reassign": None}, "KMeansConfig.reassign"),
    ],
)
def test_kmeans_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        KMeansConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"levels": ()}, "levels"),
        ({"levels": (10, 100)}, "levels"),
        ({"levels": (10, 0)}, "levels"),
        ({"levels": (10, 5), "sample_sizes": (3,)}, "sample_sizes"),
        ({"levels": (10, 5), "sample_sizes": (3, 0)}, "sample_sizes"),
        ({"resampling_steps": -1}, "resampling_steps"),
    ],
)
def test_hierarchical_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"HierarchicalKMeansConfig.{field}"):
        HierarchicalKMeansConfig(**kwargs)


def test_clear_errors_for_bad_inputs():
    x, _ = blobs([20] * 3)
    with pytest.raises(ValueError, match=r"KMeansConfig.k \(61\) exceeds the number of vectors"):
        train_kmeans(x, KMeansConfig(k=61))
    bad = x.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        train_kmeans(bad, KMeansConfig(k=3))
    bad[5, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        assign(bad, x[:3])
    with pytest.raises(ValueError, match="vectors have 16 dims but centroids have 8"):
        assign(x, x[:3, :8])
    with pytest.raises(ValueError, match="2-d"):
        assign(x[0], x[:3])
    with pytest.raises(ValueError, match="batch_size"):
        assign(x, x[:3], batch_size=0)
    with pytest.raises(ValueError, match=r"levels\[0\] \(100\) exceeds"):
        hierarchical_kmeans(x, HierarchicalKMeansConfig(levels=(100, 10)))


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="faiss sees a GPU here")
def test_use_gpu_without_a_gpu_says_so():
    x, _ = blobs([20] * 3)
    with pytest.raises(ValueError, match="no GPU"):
        train_kmeans(x, KMeansConfig(k=3, use_gpu=True))


# -- hierarchical k-means and balanced sampling -------------------------------------------------


def two_level_tree(leaf_sizes: list[int], leaf_parent: list[int]) -> ClusterTree:
    """A hand-made tree: leaf cluster c holds ``leaf_sizes[c]`` consecutive points and sits under
    top cluster ``leaf_parent[c]`` (centroids are placeholders: sampling does not read them)."""
    points = np.repeat(np.arange(len(leaf_sizes)), leaf_sizes)
    n_top = max(leaf_parent) + 1
    return ClusterTree(
        (
            ClusterLevel(np.zeros((len(leaf_sizes), 2)), points, np.zeros(len(points))),
            ClusterLevel(np.zeros((n_top, 2)), np.array(leaf_parent), np.zeros(len(leaf_sizes))),
        )
    )


def test_balanced_sample_fills_small_clusters_and_splits_the_rest_evenly():
    # Top A holds leaves of 1 and 2 points, top B leaves of 10 and 10: a budget of 8 gives A
    # its 3 points and B the other 5, split 3 + 2 between its two leaves.
    tree = two_level_tree([1, 2, 10, 10], [0, 0, 1, 1])
    for seed in range(10):
        rows = balanced_sample(tree, 8, seed=seed)
        leaf_counts = np.bincount(tree.levels[0].assignment[rows], minlength=4)
        assert leaf_counts[:2].tolist() == [1, 2]
        assert sorted(leaf_counts[2:].tolist()) == [2, 3]
    assert balanced_sample(tree, 0).size == 0
    np.testing.assert_array_equal(balanced_sample(tree, 23), np.arange(23))
    with pytest.raises(ValueError, match=r"target_size \(24\) exceeds the 23 points"):
        balanced_sample(tree, 24)


def test_balanced_sample_is_deterministic_for_a_seed():
    tree = two_level_tree([50, 5, 30, 200, 7], [0, 0, 1, 1, 2])
    first = balanced_sample(tree, 60, seed=3)
    np.testing.assert_array_equal(first, balanced_sample(tree, 60, seed=3))
    assert not np.array_equal(first, balanced_sample(tree, 60, seed=4))
    assert first.dtype == np.int64 and np.all(np.diff(first) > 0)
    # Top clusters A (55 points), B (230) and C (7): C gives all 7, A and B split the other 53.
    top = np.bincount(tree.point_clusters(1)[first], minlength=3)
    assert sorted(top[:2].tolist()) == [26, 27] and top[2] == 7


def test_cluster_tree_checks_its_levels():
    tree = two_level_tree([3, 4], [0, 0])
    with pytest.raises(ValueError, match="level 1 must assign 2 items"):
        ClusterTree((tree.levels[0], ClusterLevel(np.zeros((1, 2)), np.zeros(3, int), np.zeros(3))))
    with pytest.raises(ValueError, match="outside"):
        ClusterTree((ClusterLevel(np.zeros((2, 2)), np.array([0, 2]), np.zeros(2)),))


def test_scaled_levels_keep_items_per_cluster():
    assert scaled_levels(1_000_000) == (1000, 100, 10)
    assert scaled_levels(5600) == (1000, 100, 10)
    assert scaled_levels(500) == (100, 20, 4)
    assert scaled_levels(12) == (2,)
    assert scaled_levels(5) == (1,)


def test_hierarchical_levels_chain_up():
    x, _ = blobs([120] * 5, seed=8)
    config = HierarchicalKMeansConfig(levels=(40, 8, 3), resampling_steps=2, seed=1)
    tree = hierarchical_kmeans(x, config)
    assert [level.k for level in tree.levels] == [40, 8, 3]
    assert [len(level.assignment) for level in tree.levels] == [600, 40, 8]
    assert [int(sizes.sum()) for sizes in tree.cluster_sizes()] == [600, 600, 600]
    for level in tree.levels:
        np.testing.assert_allclose(np.linalg.norm(level.centroids, axis=1), 1.0, atol=1e-5)
    again = hierarchical_kmeans(x, config)
    for level, same in zip(tree.levels, again.levels):
        np.testing.assert_array_equal(level.centroids, same.centroids)
        np.testing.assert_array_equal(level.assignment, same.assignment)


IMBALANCED_SIZES = np.round(2000 * 50.0 ** (-np.arange(10) / 9)).astype(int)  # 2000 ... 62, 40


def test_resampling_spreads_centroids_away_from_the_dense_blob():
    """Plain k-means gives the 2000-point blob the most centroids; re-clustering the points
    nearest each centroid (Vo et al.'s resampling) moves centroids out to the smaller blobs."""
    x, labels = blobs(IMBALANCED_SIZES, noise=0.3)
    per_blob = {}
    for steps in (0, 10):
        tree = hierarchical_kmeans(
            x, HierarchicalKMeansConfig(levels=(100,), resampling_steps=steps)
        )
        cluster_id = tree.levels[0].assignment
        majority = [np.bincount(labels[cluster_id == c]).argmax() for c in np.unique(cluster_id)]
        per_blob[steps] = np.bincount(majority, minlength=10)
    print("\nclusters per blob, plain:", per_blob[0].tolist(), "resampled:", per_blob[10].tolist())
    assert 2 * per_blob[10][0] <= per_blob[0][0]
    assert entropy(per_blob[10]) > entropy(per_blob[0]) + 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_balanced_sampling_flattens_imbalanced_classes(seed):
    """Issue 15's acceptance test: 10 blobs of 2000 down to 40 points (50x apart); a hierarchical
    balanced sample of 400 is far flatter across blobs than a uniform random sample of 400."""
    x, labels = blobs(IMBALANCED_SIZES, noise=0.3, seed=seed)
    levels = scaled_levels(len(x))
    tree = hierarchical_kmeans(x, HierarchicalKMeansConfig(levels=levels, seed=seed))
    rows = balanced_sample(tree, 400, seed=seed)
    uniform = np.random.default_rng(seed).choice(len(x), 400, replace=False)

    assert len(rows) == 400 and len(np.unique(rows)) == 400
    balanced_counts = np.bincount(labels[rows], minlength=10)
    uniform_counts = np.bincount(labels[uniform], minlength=10)
    balanced_ratio = balanced_counts.max() / max(balanced_counts.min(), 1)
    uniform_ratio = uniform_counts.max() / max(uniform_counts.min(), 1)
    print(
        f"\nlevels {levels}; per class balanced {balanced_counts.tolist()} (max/min "
        f"{balanced_ratio:.1f}, entropy {entropy(balanced_counts):.3f}), uniform "
        f"{uniform_counts.tolist()} (max/min {uniform_ratio:.1f}, entropy "
        f"{entropy(uniform_counts):.3f}); ln 10 = {np.log(10):.3f}"
    )
    assert balanced_ratio * 4 < uniform_ratio
    assert entropy(balanced_counts) > entropy(uniform_counts) + 0.25
    assert balanced_counts[-1] >= 3 * max(uniform_counts[-1], 1)  # the rarest blob
