"""Our faiss spherical k-means against scikit-learn's KMeans and MiniBatchKMeans (issue 15).

Data: ``--n`` vectors of ``--dim`` dims drawn from a mixture of ``--components`` Gaussians around
random unit centres (``centre + noise * N(0, I / dim)``), L2-normalised; every method clusters the
same float32 array into ``--k`` clusters with ``--niter`` iterations.

Equal iterations:

* ours (:func:`curation.index.kmeans.train_kmeans`): ``niter`` Lloyd iterations over its training
  rows (the whole pool while ``n <= 256 * k``), after greedy k-means++ on ``16 * k`` rows;
* ``KMeans``: ``max_iter=niter`` Lloyd iterations, ``tol=0`` (it stops early only once no label
  changes), ``n_init=1``, its default greedy k-means++ on all rows;
* ``MiniBatchKMeans``: ``max_iter=niter`` is ``niter`` epochs, each ``n / batch_size`` steps, so
  every point meets every centroid ``niter`` times as in Lloyd; ``batch_size=4096`` (scikit-learn's
  1024 default does the same arithmetic in four times as many, less efficient, steps),
  ``max_no_improvement=None`` and ``tol=0`` so it runs all epochs, ``n_init=1``, k-means++ on its
  default ``init_size`` (3 x batch_size) rows.

Seconds are wall time of the fit alone (data already in memory, normalised). Inertia is computed
the same way for every method by :func:`curation.index.kmeans.assign` over all ``n`` rows: the sum
of squared L2 distances to the nearest centroid. scikit-learn's centroids are free means, ours have
unit norm (spherical k-means), which costs a little squared-L2 inertia on the same partition, so
the table also gives the inertia with every method's centroids scaled to unit norm (the objective
spherical k-means minimises, 2 - 2 cos per point).

``--sample-rows R ...`` adds rows for ours trained on a seeded sample of R points (the design's
path for pools larger than ``256 * k``); their inertia is still over all ``n`` rows.

Usage: ``python benchmarks/bench_kmeans.py [--n 200000] [--dim 256] [--k 1000] [--niter 20]
[--seed 0] [--methods ours minibatch kmeans] [--sample-rows 64000] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from curation.index.kmeans import KMeansConfig, assign, train_kmeans


def clustered_vectors(
    n: int, dim: int, components: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` float32 unit rows from a Gaussian mixture, and each row's component."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Component weights from a Dirichlet: some components crowd, as real pools do.
    component = rng.choice(components, size=n, p=rng.dirichlet(np.full(components, 2.0)))
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):  # in blocks: no float64 copy of the whole matrix
        rows = component[start : start + 65_536]
        noise_block = rng.standard_normal((len(rows), dim), dtype=np.float32)
        block = centres[rows] + noise / np.sqrt(dim) * noise_block
        x[start : start + len(rows)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, component


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum over rows of the squared L2 distance to the nearest centroid (float64 sum)."""
    _, distance = assign(x, centroids, use_gpu=False)
    return float(distance.sum(dtype=np.float64))


def unit(centroids: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    return (centroids / np.where(norms == 0, 1, norms)).astype(np.float32)


def fit_ours(x, k, niter, seed, sample_rows=None) -> np.ndarray:
    return train_kmeans(x, KMeansConfig(k=k, niter=niter, seed=seed, max_train_points=sample_rows))


def fit_sklearn_kmeans(x, k, niter, seed) -> np.ndarray:
    from sklearn.cluster import KMeans

    model = KMeans(k, init="k-means++", n_init=1, max_iter=niter, tol=0.0, random_state=seed)
    return model.fit(x).cluster_centers_.astype(np.float32)


def fit_sklearn_minibatch(x, k, niter, seed) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(
        k,
        init="k-means++",
        n_init=1,
        max_iter=niter,
        batch_size=4096,
        tol=0.0,
        max_no_improvement=None,
        random_state=seed,
    )
    return model.fit(x).cluster_centers_.astype(np.float32)


def run(args) -> list[dict]:
    x, _ = clustered_vectors(args.n, args.dim, args.components or args.k, args.noise, args.seed)
    methods = {
        "ours": lambda: fit_ours(x, args.k, args.niter, args.seed),
        "minibatch": lambda: fit_sklearn_minibatch(x, args.k, args.niter, args.seed),
        "kmeans": lambda: fit_sklearn_kmeans(x, args.k, args.niter, args.seed),
    }
    labels = {
        "ours": "ours (faiss, spherical)",
        "minibatch": "sklearn MiniBatchKMeans",
        "kmeans": "sklearn KMeans (lloyd)",
    }
    plan = [(labels[name], methods[name]) for name in args.methods]
    for rows in args.sample_rows:
        plan.append(
            (
                f"ours, trained on {rows} rows",
                lambda r=rows: fit_ours(x, args.k, args.niter, args.seed, r),
            )
        )
    results = []
    for label, fit in plan:
        start = time.perf_counter()
        centroids = fit()
        seconds = time.perf_counter() - start
        results.append(
            {
                "method": label,
                "seconds": seconds,
                "inertia": inertia(x, centroids),
                "inertia_unit_centroids": inertia(x, unit(centroids)),
            }
        )
        print(f"  {label}: {seconds:.1f} s", flush=True)
    return results


def print_table(results: list[dict]) -> None:
    ours = next((r for r in results if r["method"].startswith("ours (")), results[0])
    print(
        f"{'method':32} {'seconds':>9} {'ours faster by':>15} {'inertia':>12} {'vs ours':>8} "
        f"{'inertia (unit centroids)':>25} {'vs ours':>8}"
    )
    for r in results:
        print(
            f"{r['method']:32} {r['seconds']:9.1f} {r['seconds'] / ours['seconds']:14.2f}x "
            f"{r['inertia']:12.1f} {r['inertia'] / ours['inertia']:8.4f} "
            f"{r['inertia_unit_centroids']:25.1f} "
            f"{r['inertia_unit_centroids'] / ours['inertia_unit_centroids']:8.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--components", type=int, default=0, help="mixture size (0: k)")
    parser.add_argument("--noise", type=float, default=0.5, help="noise norm around a centre")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["ours", "minibatch", "kmeans"],
        choices=["ours", "minibatch", "kmeans"],
    )
    parser.add_argument("--sample-rows", type=int, nargs="*", default=[])
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    print(
        f"n={args.n} dim={args.dim} k={args.k} niter={args.niter} seed={args.seed} "
        f"cpus={os.cpu_count()}",
        flush=True,
    )
    results = run(args)
    print_table(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
