"""Planted near-duplicate vectors shared by the index tests."""

from __future__ import annotations

import numpy as np
import pytest


def planted_vectors(n: int, d: int, groups: int, seed: int, low: float = 0.8, high: float = 0.95):
    """``n`` random unit vectors whose first rows are ``groups`` pairs ``(g, groups + g)`` of
    noisy copies of one base, at cosine ~U(low, high) to each other."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base = x[:groups].astype(np.float64)
    # normalise(base + s z), z ~ N(0, I/d): the two copies meet at cosine ~ 1 / (1 + s^2).
    scale = np.sqrt(1.0 / rng.uniform(low, high, groups) - 1.0)[:, None]
    for rows in (slice(0, groups), slice(groups, 2 * groups)):
        copy = base + scale * rng.standard_normal((groups, d)) / np.sqrt(d)
        x[rows] = copy / np.linalg.norm(copy, axis=1, keepdims=True)
    return x


@pytest.fixture
def planted():
    return planted_vectors
