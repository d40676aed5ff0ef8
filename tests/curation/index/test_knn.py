"""k-nearest-neighbour pairs above a cosine threshold: exact, IVF and IVF-PQ against brute force."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pytest

from curation.index.knn import (
    cross_pairs,
    default_nlist,
    edges_table,
    knn_pairs,
    normalized,
    pair_similarities,
)
from schemas import DEDUP_EDGE_SCHEMA, validate

HAS_GPU = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def brute_force_pairs(x: np.ndarray, k: int, threshold: float) -> set[tuple[int, int]]:
    """The definition, written out on a full similarity matrix."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    pairs = set()
    for row in range(len(x)):
        for col in np.argsort(-sims[row])[:k]:
            if sims[row, col] > threshold:
                pairs.add((min(row, col), max(row, col)))
    return pairs


def as_set(i, j) -> set[tuple[int, int]]:
    return set(zip(i.tolist(), j.tolist()))


def test_hand_made_vectors_give_exactly_the_pairs_above_the_threshold():
    vectors = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [4.0, 3.0, 0.0, 0.0],  # cosine 0.8 with row 0 once normalised (norm 5)
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.6, 0.8],  # cosine exactly 0.6 with row 2: not strictly above
            [0.0, 0.0, 0.8, 0.6],  # 0.8 with row 2, 0.96 with row 3
            [-1.0, 0.0, 0.0, 0.0],
        ],
        dtype=np.float32,
    )
    i, j, sim = knn_pairs(vectors, k=64, threshold=0.6)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (2, 4), (3, 4)]
    np.testing.assert_allclose(sim, [0.8, 0.8, 0.96], atol=1e-6)
    assert sim.dtype == np.float32
    i, _, _ = knn_pairs(vectors, k=64, threshold=0.59)
    assert len(i) == 4  # (2, 3) at exactly 0.6 joins once the threshold is below it


def test_exact_search_matches_the_brute_force_definition_including_the_k_cut():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, 8))
    x = (centres[rng.integers(0, 20, 400)] + 0.4 * rng.standard_normal((400, 8))).astype(np.float32)
    for k in (1, 3, 64):
        i, j, sim = knn_pairs(x, k=k, threshold=0.5)
        assert as_set(i, j) == brute_force_pairs(x, k, 0.5)
        assert np.all(sim > np.float32(0.5))
    assert len(knn_pairs(x, k=1, threshold=0.5)[0]) < len(knn_pairs(x, k=64, threshold=0.5)[0])


def test_pairs_are_ordered_unique_sorted_and_similarities_exact(planted):
    x = planted(3000, 32, 200, seed=1)
    i, j, sim = knn_pairs(x, k=8, threshold=0.7)
    assert np.all(i < j)
    codes = i * len(x) + j
    assert np.all(np.diff(codes) > 0)  # sorted by (i, j), no pair twice
    expected = (x[i].astype(np.float64) * x[j]).sum(axis=1)
    np.testing.assert_allclose(sim, expected, atol=1e-6)


def test_ivf_finds_the_pairs_exact_search_finds(planted):
    x = planted(20_000, 64, 500, seed=2)
    exact_i, exact_j, exact_sim = knn_pairs(x, k=16, threshold=0.7, index="flat")
    assert {(g, 500 + g) for g in range(500)} <= as_set(exact_i, exact_j)
    i, j, sim = knn_pairs(x, k=16, threshold=0.7, exact_limit=10_000, nprobe=24)  # auto -> IVF
    exact, found = as_set(exact_i, exact_j), as_set(i, j)
    assert found <= exact
    assert len(found) / len(exact) >= 0.98
    # The same pair has the same similarity whichever index found it.
    lookup = dict(zip(zip(exact_i.tolist(), exact_j.tolist()), exact_sim.tolist()))
    assert [lookup[p] for p in zip(i.tolist(), j.tolist())] == sim.tolist()


def test_ivf_pq_reranks_candidates_with_exact_similarities(planted):
    x = planted(4000, 32, 150, seed=4)
    exact_i, exact_j, exact_sim = knn_pairs(x, k=8, threshold=0.75, index="flat")
    i, j, sim = knn_pairs(x, k=8, threshold=0.75, index="ivfpq", nlist=16, nprobe=16, pq_bytes=8)
    exact, found = as_set(exact_i, exact_j), as_set(i, j)
    assert found <= exact  # no approximate similarity let a false pair through
    assert len(found) / len(exact) >= 0.95
    lookup = dict(zip(zip(exact_i.tolist(), exact_j.tolist()), exact_sim.tolist()))
    assert [lookup[p] for p in zip(i.tolist(), j.tolist())] == sim.tolist()


def test_pq_bytes_must_divide_the_dimension():
    x = np.random.default_rng(0).standard_normal((2000, 30)).astype(np.float32)
    with pytest.raises(ValueError, match="pq_bytes"):
        knn_pairs(x, 4, 0.9, index="ivfpq", nlist=8, pq_bytes=7)


def test_cross_pairs_finds_each_query_s_copies_and_nothing_else():
    rng = np.random.default_rng(5)
    refs = rng.standard_normal((2000, 64)).astype(np.float32)
    source = rng.choice(2000, 40, replace=False)
    copies = refs[source] + 0.3 * rng.standard_normal((40, 64)).astype(np.float32)
    queries = np.concatenate([copies, rng.standard_normal((60, 64)).astype(np.float32)])
    qi, ri, sim = cross_pairs(queries, refs, k=4, threshold=0.7)
    assert list(zip(qi.tolist(), ri.tolist())) == list(zip(range(40), source.tolist()))
    expected = (normalized(queries)[qi].astype(np.float64) * normalized(refs)[ri]).sum(axis=1)
    np.testing.assert_allclose(sim, expected, atol=1e-6)
    # k bounds the references per query: the copy and its twin, only the nearest with k=1.
    twin = np.concatenate([refs, refs[source[:1]] * 1.01 + 0.01])
    qi, ri, _ = cross_pairs(queries[:1], twin, k=2, threshold=0.7)
    assert sorted(ri.tolist()) == sorted([int(source[0]), 2000])
    assert len(cross_pairs(queries[:1], twin, k=1, threshold=0.7)[0]) == 1


def test_cross_pairs_ivf_agrees_with_exact(planted):
    x = planted(12_000, 64, 300, seed=6)
    refs, queries = x[300:], x[:300]  # each query's copy is reference g (row 300 + g)
    exact = cross_pairs(queries, refs, k=4, threshold=0.7, index="flat")
    approx = cross_pairs(queries, refs, k=4, threshold=0.7, index="ivf", nlist=64, nprobe=32)
    assert as_set(*approx[:2]) <= as_set(*exact[:2])
    assert len(approx[0]) >= 0.98 * len(exact[0]) and len(exact[0]) >= 300


def test_edges_table_orders_each_pair_by_key():
    table = edges_table(["b", "a", "c"], np.array([0, 1]), np.array([1, 2]), np.array([0.9, 0.7]))
    validate(table, DEDUP_EDGE_SCHEMA)
    assert table.schema.equals(DEDUP_EDGE_SCHEMA)
    assert table.to_pylist() == [
        {"src_key": "a", "dst_key": "b", "similarity": pytest.approx(0.9)},
        {"src_key": "a", "dst_key": "c", "similarity": pytest.approx(0.7)},
    ]
    with pytest.raises(ValueError, match="distinct"):
        edges_table(pa.array(["a", "a"]), np.array([0]), np.array([1]), np.array([0.9]))


def test_inputs_are_checked_and_degenerate_sets_are_empty():
    with pytest.raises(ValueError, match="2-d"):
        knn_pairs(np.zeros(5, np.float32), 4, 0.6)
    with pytest.raises(ValueError, match="index must be"):
        knn_pairs(np.eye(3, dtype=np.float32), 4, 0.6, index="hnsw")
    assert len(knn_pairs(np.ones((1, 4), np.float32), 4, 0.6)[0]) == 0
    zero = np.zeros((3, 4), np.float32)  # zero rows pair with nothing
    assert len(knn_pairs(zero, 4, -0.5)[0]) == 3 and len(knn_pairs(zero, 4, 0.0)[0]) == 0
    assert default_nlist(1_000_000) == 1024 and default_nlist(1) == 1


def test_pair_similarities_do_not_depend_on_the_batch():
    x = normalized(np.random.default_rng(7).standard_normal((50, 16)))
    i, j = np.arange(49), np.arange(1, 50)
    whole = pair_similarities(x, i, j)
    parts = np.concatenate([pair_similarities(x, i[:7], j[:7]), pair_similarities(x, i[7:], j[7:])])
    assert whole.tobytes() == parts.tobytes()


@pytest.mark.skipif(HAS_GPU, reason="checks the message shown without a GPU")
def test_asking_for_a_gpu_without_one_says_what_to_install():
    with pytest.raises(RuntimeError, match=r"\[gpu\]"):
        knn_pairs(np.eye(4, dtype=np.float32), 2, 0.5, use_gpu=True)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs faiss with a GPU")
def test_gpu_ivf_agrees_with_cpu(planted):
    x = planted(20_000, 64, 500, seed=8)
    cpu = knn_pairs(x, 16, 0.7, index="flat", use_gpu=False)
    gpu = knn_pairs(x, 16, 0.7, index="flat", use_gpu=True)
    assert as_set(*gpu[:2]) == as_set(*cpu[:2])
    ivf = knn_pairs(x, 16, 0.7, index="ivf", nprobe=32, use_gpu=True)
    assert len(as_set(*ivf[:2]) & as_set(*cpu[:2])) >= 0.98 * len(cpu[0])


def test_identical_vectors_still_get_at_most_k_neighbours_each():
    # Ten copies of one vector: the index may rank other copies above the query itself, so
    # self-exclusion must not leave k + 1 neighbours in the row.
    x = np.tile(np.random.default_rng(9).standard_normal((1, 8)).astype(np.float32), (10, 1))
    i, j, sim = knn_pairs(x, k=2, threshold=0.5)
    assert len(i) <= 10 * 2
    assert set(i.tolist()) | set(j.tolist()) == set(range(10))
    np.testing.assert_allclose(sim, 1.0, atol=1e-6)
