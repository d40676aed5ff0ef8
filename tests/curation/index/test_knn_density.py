"""Density scores in the kNN search: the densities are neighbour_density's, the edges are the
definition's (written out on a full matrix), and the cosine prefilter loses no accepted pair."""

from __future__ import annotations

import numpy as np
import pytest

from curation.index.calibration import calibrated_scores, neighbour_density
from curation.index.knn import DensityScore, density_from_pairs, knn_edges


def brute_force(x: np.ndarray, k: int, threshold: float, ranks=(5, 20), beta: float = 1.0):
    """Pairs among each row's k nearest (self excluded) with density score > threshold."""
    sims = (x.astype(np.float64) @ x.T.astype(np.float64)).astype(np.float32)
    density = neighbour_density(x, ranks=ranks)
    np.fill_diagonal(sims, -np.inf)
    pairs = {}
    for row in range(len(x)):
        for col in np.argsort(-sims[row], kind="stable")[:k]:
            score = calibrated_scores(sims[row, col], density[row], density[col], beta)
            if score > np.float32(threshold):
                pairs[(min(row, col), max(row, col))] = float(sims[row, col])
    return pairs


def clustered(seed: int, n: int = 600, d: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, d))
    x = centres[rng.integers(0, 30, n)] + 0.5 * rng.standard_normal((n, d))
    m = min(40, n // 2)
    x[n // 2 : n // 2 + m] = x[:m] + 0.05 * rng.standard_normal((m, d))  # copies
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k", [3, 20, 64])
def test_density_from_the_search_is_neighbour_density_itself_excluded(k):
    x = clustered(0)
    found = knn_edges(x, k, 0.1, density=DensityScore((5, 20)), index="flat", batch=250)
    np.testing.assert_allclose(found.density, neighbour_density(x, ranks=(5, 20)), atol=1e-6)
    # The neighbour pairs are what the densities came from.
    rebuilt, counts = density_from_pairs(len(x), *found.neighbours, (5, 20))
    np.testing.assert_array_equal(rebuilt, found.density)
    assert np.all(counts == 20)


def test_density_of_a_pool_smaller_than_the_ranks_uses_what_there_is():
    x = clustered(1, n=9)
    found = knn_edges(x, 64, 0.0, density=DensityScore((5, 20)), index="flat")
    np.testing.assert_allclose(found.density, neighbour_density(x, ranks=(5, 20)), atol=1e-6)


@pytest.mark.parametrize("k, threshold", [(5, 0.0), (64, 0.1), (64, 0.3)])
def test_density_edges_are_the_definition(k, threshold):
    x = clustered(2)
    found = knn_edges(x, k, threshold, density=DensityScore(), index="flat")
    expected = brute_force(x, k, threshold)
    assert set(zip(found.i.tolist(), found.j.tolist())) == set(expected)
    score = calibrated_scores(found.similarity, found.density[found.i], found.density[found.j])
    np.testing.assert_array_equal(found.score, score)


def test_the_prefilter_keeps_pairs_whose_cosine_is_below_the_threshold_but_score_above():
    """Points on a circle: each one's 5th-20th neighbours point away from it, so densities are
    negative and pairs with cosine under the threshold have a score over it."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    threshold = 0.8
    found = knn_edges(x, 23, threshold, density=DensityScore(), index="flat")
    expected = brute_force(x, 23, threshold)
    assert set(zip(found.i.tolist(), found.j.tolist())) == set(expected)
    assert np.all(found.density < 0)
    assert np.any(found.similarity <= threshold)  # accepted only thanks to the density
