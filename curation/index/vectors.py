"""Vector primitives the kNN searches share: unit rows, exact pair similarities (float64 sums
rounded to float32, so every search path agrees bit for bit) and spherical k-means centroids."""

from __future__ import annotations

import numpy as np

PAIR_CHUNK = 32_768  # pairs per gather (x d float64: 128 MiB at d = 512)


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as C-contiguous float32 (no copy when they already are).

    All-zero rows stay zero: their similarity to anything is 0, so they never pair.
    """
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-d (n, d) array, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    if np.all(np.abs(norms - 1.0) < 1e-5):
        return x
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms[:, None], dtype=np.float32)


def pair_similarities(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """float32 inner products ``x[i] . x[j]`` (summed in float64, so independent of batching)."""
    out = np.empty(len(i), dtype=np.float32)
    for start in range(0, len(i), PAIR_CHUNK):
        a = x[i[start : start + PAIR_CHUNK]].astype(np.float64)
        b = x[j[start : start + PAIR_CHUNK]]
        out[start : start + PAIR_CHUNK] = np.einsum("ij,ij->i", a, b)
    return out


def train_centroids(
    sample: np.ndarray,
    n_centroids: int,
    *,
    seed: int = 0,
    iterations: int = 10,
    use_gpu: bool = False,
    init_centroids: np.ndarray | None = None,
) -> np.ndarray:
    """Spherical k-means (unit-norm centroids, for inner-product assignment) on a sample, from
    ``init_centroids`` when given (else faiss's random pick of sample rows)."""
    import faiss

    sample = normalized(sample)
    if not 1 <= n_centroids <= len(sample):
        raise ValueError(f"need 1 <= n_centroids <= {len(sample)} (the sample), got {n_centroids}")
    kmeans = faiss.Kmeans(
        sample.shape[1],
        n_centroids,
        niter=iterations,
        seed=seed,
        spherical=True,
        gpu=use_gpu,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, -(-len(sample) // n_centroids)),
    )
    kmeans.train(sample, init_centroids=init_centroids)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
