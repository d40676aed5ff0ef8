"""The IVF matrix-multiply join against exact search: same pairs, same similarities."""

from __future__ import annotations

import numpy as np
import pytest

from curation.index import ivf_join
from curation.index.ivf_join import block_tiles, ivf_join_pairs
from curation.index.knn import knn_pairs


def clustered_vectors(seed: int = 0) -> np.ndarray:
    """One tight cluster of 600 vectors (hundreds of pairs over 0.6 each, one huge list) beside
    400 random ones: the lists are very unbalanced and the k cut matters."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(32)
    tight = centre / np.linalg.norm(centre) + 0.12 * rng.standard_normal((600, 32))
    loose = rng.standard_normal((400, 32))
    x = np.concatenate([tight, loose]).astype(np.float32)
    return x[rng.permutation(len(x))]


def assert_same(found, expected):
    for got, want in zip(found, expected):
        np.testing.assert_array_equal(got, want)


def test_all_lists_probed_gives_exactly_the_exact_search(planted):
    x = planted(3000, 32, 150, seed=1)
    expected = knn_pairs(x, 64, 0.6, index="flat")
    assert len(expected[0]) >= 150
    assert_same(ivf_join_pairs(x, 64, 0.6, nlist=16, nprobe=16, seed=3), expected)


def test_pairs_across_lists_are_found_with_a_few_probes(planted):
    x = planted(3000, 64, 150, seed=2)
    expected = knn_pairs(x, 64, 0.6, index="flat")
    # 32 lists: planted pairs often straddle two of them, so only probing finds them all.
    assert len(ivf_join_pairs(x, 64, 0.6, nlist=32, nprobe=1, seed=0)[0]) < len(expected[0])
    assert_same(ivf_join_pairs(x, 64, 0.6, nlist=32, nprobe=8, seed=0), expected)


def test_unbalanced_lists_with_the_k_cut_match_exact_search():
    x = clustered_vectors()
    for k in (3, 20):
        expected = knn_pairs(x, k, 0.6, index="flat")
        everything = knn_pairs(x, 999, 0.6, index="flat")
        assert len(expected[0]) < len(everything[0])  # the k cut removes pairs here
        assert_same(ivf_join_pairs(x, k, 0.6, nlist=8, nprobe=8), expected)


def test_blocks_stay_under_the_memory_cap_and_change_nothing(monkeypatch):
    x = clustered_vectors(seed=4)
    expected = ivf_join_pairs(x, 10, 0.6, nlist=8, nprobe=8)
    shapes = []
    product = ivf_join.block_similarities

    def recording(queries, members):
        shapes.append((len(queries), len(members)))
        return product(queries, members)

    monkeypatch.setattr(ivf_join, "block_similarities", recording)
    cap = 20_000
    assert_same(ivf_join_pairs(x, 10, 0.6, nlist=8, nprobe=8, max_block_bytes=cap), expected)
    assert max(rows * cols * 5 for rows, cols in shapes) <= cap
    assert sum(rows * cols for rows, cols in shapes) == len(x) * len(x)  # every list, every probe


@pytest.mark.parametrize(
    "rows,cols,cap", [(1, 1, 5), (10_000, 3, 4_000), (7, 5_000, 4_000), (0, 9, 50)]
)
def test_tiles_cover_every_cell_once_within_the_cap(rows, cols, cap):
    covered = np.zeros((rows, cols), dtype=np.int64)
    for row_tile, col_tile in block_tiles(rows, cols, cap):
        covered[row_tile, col_tile] += 1
        cells = (row_tile.stop - row_tile.start) * (col_tile.stop - col_tile.start)
        assert cells * 5 <= max(cap, 5)
    assert np.all(covered == 1)


def test_the_threshold_is_strict():
    vectors = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [4.0, 3.0, 0.0, 0.0],  # cosine 0.8 with row 0
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.6, 0.8],  # exactly 0.6 with row 2: not strictly above
            [0.0, 0.0, 0.8, 0.6],
            [-1.0, 0.0, 0.0, 0.0],
        ],
        dtype=np.float32,
    )
    i, j, sim = ivf_join_pairs(vectors, 64, 0.6, nlist=2, nprobe=2)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (2, 4), (3, 4)]
    assert sim.dtype == np.float32
    assert len(ivf_join_pairs(vectors, 64, 0.59, nlist=2, nprobe=2)[0]) == 4


def test_a_projected_search_finds_the_same_pairs(planted):
    x = planted(2000, 64, 100, seed=5)
    expected = knn_pairs(x, 64, 0.6, index="flat")
    assert_same(ivf_join_pairs(x, 64, 0.6, nlist=8, nprobe=8, search_dims=32), expected)


def test_empty_and_tiny_inputs():
    for n in (0, 1):
        i, j, sim = ivf_join_pairs(np.ones((n, 8), np.float32), 5, 0.6)
        assert len(i) == len(j) == len(sim) == 0
    two = np.array([[1.0, 0.0], [0.9, 0.1]], np.float32)
    i, j, sim = ivf_join_pairs(two, 5, 0.6)
    assert (i.tolist(), j.tolist()) == ([0], [1])
    assert len(ivf_join_pairs(two, 5, 0.9999)[0]) == 0
    with pytest.raises(ValueError, match="k must be"):
        ivf_join_pairs(two, 0, 0.6)


def test_knn_pairs_with_index_join_is_the_join():
    from curation.index.knn import DensityScore, knn_edges, knn_pairs

    rng = np.random.default_rng(11)
    x = rng.normal(size=(400, 24)).astype(np.float32)
    x[200:] = x[:200] + 0.2 * rng.normal(size=(200, 24)).astype(np.float32)
    exact = knn_pairs(x, 5, 0.6, index="flat")
    joined = knn_pairs(x, 5, 0.6, index="join", nlist=8, nprobe=8)
    for a, b in zip(exact, joined):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="cosine only"):
        knn_edges(x, 5, 0.0, index="join", density=DensityScore())
