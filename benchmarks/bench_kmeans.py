"""Our k-means against scikit-learn's KMeans and MiniBatchKMeans (issue 15).

Data: ``--n`` vectors of ``--dim`` dims drawn from a mixture of ``--components`` Gaussians around
random unit centres (``centre + noise * N(0, I / dim)``), L2-normalised; every method clusters the
same float32 array into ``--k`` clusters with ``--niter`` iterations. Two data sets make the
issue's comparison: separated (the defaults: as many components as clusters, ``--noise 0.5``)
and overlapping (``--components 20000 --noise 1.0``).

Equal iterations:

* ours (:func:`curation.index.kmeans.train_kmeans`): ``niter`` Lloyd iterations
  (:mod:`curation.index.lloyd`: the first a faiss search of every training row, the later ones
  pruned searches that are exact for the nearest centroid; Hartigan's point moves and split/merge
  centroid moves but in the last two) over its training rows (the whole pool while
  ``n <= 256 * k``), after greedy k-means++ on ``4 * k`` rows. Two modes: ``ours (spherical)``,
  the pipeline's default (unit-norm centroids), and ``ours (euclidean)`` (``spherical=False``:
  free means, plain k-means on the normalised rows, as scikit-learn runs it), and ``ours
  (spherical, means)`` (``means=True``: the spherical run's partition, each cluster given its mean,
  the squared-L2 optimum on that partition, at no extra pass);
* ``KMeans``: ``max_iter=niter`` Lloyd iterations, ``tol=0`` (it stops early only once no label
  changes), ``n_init=1``, its default greedy k-means++ on all rows;
* ``MiniBatchKMeans``: ``max_iter=niter`` is ``niter`` epochs, each ``n / batch_size`` steps, so
  every point meets every centroid ``niter`` times as in Lloyd; ``batch_size=4096`` (scikit-learn's
  1024 default does the same arithmetic in four times as many, less efficient, steps),
  ``max_no_improvement=None`` and ``tol=0`` so it runs all epochs, ``n_init=1``, k-means++ on its
  default ``init_size`` (3 x batch_size) rows.

**Which inertia.** Both are computed the same way for every method by
:func:`curation.index.kmeans.assign` over all ``n`` rows (the sum of squared L2 distances to the
nearest centroid):

* ``inertia``: with each method's own centroids. This is the objective scikit-learn minimises.
  Spherical k-means cannot reach it by construction: on a given partition the free mean ``m`` of
  a cluster is the squared-L2 optimum, and the unit centroid ``m / |m|`` costs
  ``n (1 - |m|)^2`` more per cluster (unit rows spread by the noise average to ``|m| < 1``: about
  5% of the total on the separated set). So ``ours (spherical)`` is judged on the other column and
  ``ours (euclidean)`` on this one;
* ``inertia (unit centroids)``: with every method's centroids scaled to unit norm, the objective
  spherical k-means minimises (``2 - 2 cos`` per row), the pipeline's.

The goal (ours no worse than both scikit-learn methods) is judged like for like: ``ours
(spherical)`` against scikit-learn's scaled centroids on the unit-centroid inertia, ``ours
(spherical, means)`` and ``ours (euclidean)`` against scikit-learn's own centroids on the raw
inertia (scikit-learn's objective); the ``vs best sklearn`` columns give those ratios (<= 1: no
worse than both).

**Seconds** are wall time of the fit alone (data already in memory, normalised), with the
process's CPU seconds and the 1-minute load average before each fit. On a shared machine they
move with the load, scikit-learn's much more than ours: its minibatch steps are many short OpenMP
regions, which stall when the cores are oversubscribed (MiniBatchKMeans took 24-27 s at load 2 on
2 cores, 100-370 s at load 4-9; a faiss search is a few long regions). Compare rows of one run,
and read the load next to them.

``--sample-rows R ...`` adds rows for ours (spherical) trained on a seeded sample of R points (the
design's path for pools larger than ``256 * k``); their inertia is still over all ``n`` rows.

Usage: ``python benchmarks/bench_kmeans.py [--n 200000] [--dim 256] [--k 1000] [--niter 20]
[--seed 0] [--components 0] [--noise 0.5] [--methods ours ours-euclidean minibatch kmeans]
[--sample-rows 64000] [--json]``.
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


def fit_ours(x, k, niter, seed, sample_rows=None, spherical=True, means=False) -> np.ndarray:
    config = KMeansConfig(
        k=k, niter=niter, seed=seed, max_train_points=sample_rows, spherical=spherical, means=means
    )
    return train_kmeans(x, config)


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


LABELS = {
    "ours": "ours (spherical)",
    "ours-means": "ours (spherical, means)",
    "ours-euclidean": "ours (euclidean)",
    "minibatch": "sklearn MiniBatchKMeans",
    "kmeans": "sklearn KMeans (lloyd)",
}


def run(args) -> list[dict]:
    x, _ = clustered_vectors(args.n, args.dim, args.components or args.k, args.noise, args.seed)
    methods = {
        "ours": lambda: fit_ours(x, args.k, args.niter, args.seed),
        "ours-means": lambda: fit_ours(x, args.k, args.niter, args.seed, means=True),
        "ours-euclidean": lambda: fit_ours(x, args.k, args.niter, args.seed, spherical=False),
        "minibatch": lambda: fit_sklearn_minibatch(x, args.k, args.niter, args.seed),
        "kmeans": lambda: fit_sklearn_kmeans(x, args.k, args.niter, args.seed),
    }
    plan = [(LABELS[name], methods[name]) for name in args.methods]
    for rows in args.sample_rows:
        plan.append(
            (
                f"ours (spherical), {rows} rows",
                lambda r=rows: fit_ours(x, args.k, args.niter, args.seed, r),
            )
        )
    results = []
    for label, fit in plan:
        load = os.getloadavg()[0]
        start, cpu = time.perf_counter(), time.process_time()
        centroids = fit()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        results.append(
            {
                "method": label,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "load_before": load,
                "inertia": inertia(x, centroids),
                "inertia_unit_centroids": inertia(x, unit(centroids)),
            }
        )
        print(f"  {label}: {seconds:.1f} s (cpu {cpu:.1f} s, load {load:.1f})", flush=True)
    return results


def print_table(results: list[dict]) -> None:
    """One row per method; the ratios are against the faster scikit-learn fit (seconds) and the
    lower scikit-learn inertia of each column (when the run has scikit-learn rows)."""
    sklearn = [r for r in results if r["method"].startswith("sklearn")]
    fastest = min((r["seconds"] for r in sklearn), default=None)
    best = {
        key: min((r[key] for r in sklearn), default=None)
        for key in ("inertia", "inertia_unit_centroids")
    }

    def ratio(value, reference, width):
        return f"{value / reference:{width}.4f}" if reference else " " * (width - 1) + "-"

    print(
        f"{'method':34} {'seconds':>8} {'cpu s':>7} {'load':>5} {'sklearn s / s':>13} "
        f"{'inertia':>10} {'vs best sklearn':>15} {'inertia (unit centroids)':>24} "
        f"{'vs best sklearn':>15}"
    )
    for r in results:
        speed = f"{fastest / r['seconds']:12.2f}x" if fastest else " " * 12 + "-"
        print(
            f"{r['method']:34} {r['seconds']:8.1f} {r['cpu_seconds']:7.1f} "
            f"{r['load_before']:5.1f} {speed} {r['inertia']:10.1f} "
            f"{ratio(r['inertia'], best['inertia'], 15)} {r['inertia_unit_centroids']:24.1f} "
            f"{ratio(r['inertia_unit_centroids'], best['inertia_unit_centroids'], 15)}"
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
        default=["ours", "ours-means", "ours-euclidean", "minibatch", "kmeans"],
        choices=list(LABELS),
    )
    parser.add_argument("--sample-rows", type=int, nargs="*", default=[])
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    print(
        f"n={args.n} dim={args.dim} k={args.k} niter={args.niter} seed={args.seed} "
        f"components={args.components or args.k} noise={args.noise} cpus={os.cpu_count()}",
        flush=True,
    )
    results = run(args)
    print_table(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
