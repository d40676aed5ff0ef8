"""Spherical k-means over the pool, batched assignment, and hierarchical balanced sampling.

**Flat k-means** (:func:`train_kmeans`): Lloyd iterations (:func:`curation.index.lloyd.lloyd`:
a faiss flat search per iteration, with Hartigan's point moves and split/merge centroid moves out
of Lloyd's local minima) on L2-normalised float32 vectors, spherical (unit-norm centroids, the
default) or Euclidean (free means), trained on a seeded random sample of at most
``max_train_points`` rows (the pool never needs to fit one process), started by k-means++ on a
smaller sample (from random initial centroids plain Lloyd leaves well-separated groups merged or
split). GPU when faiss sees one.
:func:`assign` sends any number of vectors to their nearest centroid in batches, so a Ray task or
a Spark partition can label its own part; :func:`assignment_table` makes CLUSTER_ASSIGNMENT rows.

**Hierarchical k-means and balanced sampling** (:func:`hierarchical_kmeans`,
:func:`balanced_sample`), after Vo et al. 2024, "Automatic data curation for self-supervised
learning: a clustering-based approach" (TMLR; facebookresearch/ssl-data-curation):

* bottom-up, level 0 clusters the points and level l + 1 clusters the centroids of level l;
* at each level, ``resampling_steps`` times: take from every cluster the ``sample_size`` items
  nearest its centroid, re-run k-means on those alone and re-assign all items. Dense regions no
  longer win centroids in proportion to their mass, so the centroids spread evenly over the data;
* top-down sampling: the budget is split across the top clusters by water-filling (the largest
  cap x with sum(min(x, size)) <= budget, the few left over to random clusters above the cap),
  each cluster's share is split the same way across its children, and leaf clusters give random
  points. Small clusters give all they have and their unused share goes to the others.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.index.lloyd import lloyd
from curation.index.vectors import normalized
from schemas import CLUSTER_ASSIGNMENT_SCHEMA, validate

logger = logging.getLogger(__name__)

MAX_TRAIN_POINTS = 4_000_000  # default sample cap: 4 GiB of 256-d float32 at the driver
TRAIN_POINTS_PER_CENTROID = 256  # faiss's own default sample per centroid
INIT_POINTS_PER_CENTROID = 4  # k-means++ runs k sequential passes: keep its sample small
DEFAULT_LEVELS = (1000, 100, 10)

Init = Literal["kmeans++", "random"]


def _check_int(owner: str, name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{owner}.{name} must be an integer >= {low}, got {value!r}")


def _check_bool(owner: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be true or false, got {value!r}")


def _check_init(owner: str, init) -> None:
    if init not in ("kmeans++", "random"):
        raise ValueError(f"{owner}.init must be 'kmeans++' or 'random', got {init!r}")


@dataclass(frozen=True)
class KMeansConfig:
    """One k-means: ``k`` centroids, ``niter`` Lloyd iterations, trained on at most
    ``max_train_points`` rows (None: 256 per centroid, capped at 4M), assigned ``batch_size`` rows
    at a time. ``spherical``: unit-norm centroids (cosine clusters; False: free means, plain
    Euclidean k-means on the normalised vectors). ``reassign``: Hartigan's point moves and
    split/merge centroid moves out of Lloyd's local minima (False: plain Lloyd, as faiss runs it).
    ``means``: return each cluster's mean instead of its unit centroid (the spherical partition
    with the centroids that minimise squared L2 on it: for a caller scoring squared L2, as
    scikit-learn's inertia does; the pipeline keeps unit centroids). ``use_gpu`` None: when faiss
    sees a GPU."""

    k: int
    niter: int = 20
    seed: int = 0
    max_train_points: int | None = None
    init: Init = "kmeans++"
    batch_size: int = 65_536
    use_gpu: bool | None = None
    spherical: bool = True
    reassign: bool = True
    means: bool = False

    def __post_init__(self) -> None:
        _check_int("KMeansConfig", "k", self.k, 1)
        _check_bool("KMeansConfig", "means", self.means)
        _check_bool("KMeansConfig", "spherical", self.spherical)
        _check_bool("KMeansConfig", "reassign", self.reassign)
        _check_int("KMeansConfig", "niter", self.niter, 1)
        _check_int("KMeansConfig", "seed", self.seed, 0)
        _check_int("KMeansConfig", "batch_size", self.batch_size, 1)
        _check_init("KMeansConfig", self.init)
        if self.max_train_points is not None:
            _check_int("KMeansConfig", "max_train_points", self.max_train_points, self.k)

    @property
    def train_points(self) -> int:
        """The most rows k-means trains on."""
        if self.max_train_points is not None:
            return self.max_train_points
        return max(self.k, min(TRAIN_POINTS_PER_CENTROID * self.k, MAX_TRAIN_POINTS))


def gpu_enabled(use_gpu: bool | None) -> bool:
    """Whether to run faiss on GPUs: ``use_gpu``, or when None, whether faiss sees any."""
    import faiss

    gpus = faiss.get_num_gpus()
    if use_gpu and gpus == 0:
        raise ValueError(
            "use_gpu is set but faiss sees no GPU (install faiss-gpu, or use_gpu=None)"
        )
    return gpus > 0 if use_gpu is None else bool(use_gpu)


def _unit_rows(vectors, what: str = "vectors") -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-d (n, d) array with d >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} hold NaN or infinite values; drop or repair those rows first")
    return normalized(x)


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Ascending int64 indices of ``min(size, n)`` distinct rows out of ``n``, seeded."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rows = np.random.default_rng(seed).choice(n, size=size, replace=False)
    return np.sort(rows).astype(np.int64)


def kmeans_plus_plus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``(k, d)`` initial centroids: greedy k-means++ (Arthur & Vassilvitskii 2007, with the
    2 + ln k candidates per step that scikit-learn also draws): each step draws candidate rows
    with probability proportional to their squared distance to the nearest centroid so far and
    keeps the one that lowers the total the most.

    Runs on a seeded sample of ``4 * k`` rows: k passes over it, which stay in cache (at k = 1000
    and d = 256, 0.2 s; 16 * k rows took 2.7 s and gave the same final inertia on the benchmark's
    separated set, within 0.1% on its overlapping one; the moves of Lloyd's iterations repair a
    rough start). For k in the tens of thousands prefer ``init="random"``.
    """
    rng = np.random.default_rng(seed)
    x = x[sample_rows(len(x), INIT_POINTS_PER_CENTROID * k, seed)]
    squares = np.einsum("ij,ij->i", x, x)
    trials = 2 + int(math.log(k))
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(len(x))
    nearest = np.maximum(squares + squares[chosen[0]] - 2 * (x @ x[chosen[0]]), 0)
    for i in range(1, k):
        weights = np.cumsum(nearest, dtype=np.float64)
        if weights[-1] > 0:
            draws = rng.random(trials) * weights[-1]
            candidates = np.minimum(np.searchsorted(weights, draws, side="right"), len(x) - 1)
        else:  # fewer distinct rows than k: any rows (Lloyd re-seeds the empty clusters)
            candidates = rng.integers(len(x), size=trials)
        to_candidates = squares[:, None] + squares[candidates] - 2 * (x @ x[candidates].T)
        lowered = np.minimum(nearest[:, None], np.maximum(to_candidates, 0))
        best = int(np.argmin(lowered.sum(axis=0, dtype=np.float64)))
        chosen[i] = candidates[best]
        nearest = lowered[:, best]
    return np.ascontiguousarray(x[chosen], dtype=np.float32)


def train_kmeans(vectors, config: KMeansConfig) -> np.ndarray:
    """``(k, d)`` float32 centroids of k-means over L2-normalised ``vectors`` (unit norm when
    ``config.spherical``)."""
    x = _unit_rows(vectors)
    if config.k > len(x):
        raise ValueError(f"KMeansConfig.k ({config.k}) exceeds the number of vectors ({len(x)})")
    if len(x) > config.train_points:
        x = x[sample_rows(len(x), config.train_points, config.seed)]
    if config.init == "kmeans++":
        init = kmeans_plus_plus(x, config.k, config.seed)
    else:
        init = x[np.random.default_rng(config.seed).choice(len(x), config.k, replace=False)]
    return lloyd(
        x,
        init,
        config.niter,
        spherical=config.spherical,
        reassign=config.reassign,
        seed=config.seed,
        batch_size=config.batch_size,
        use_gpu=gpu_enabled(config.use_gpu),
        free_means=config.means,
    )


def assign(
    vectors, centroids: np.ndarray, batch_size: int = 65_536, *, use_gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each L2-normalised vector's nearest centroid (int64) and squared L2 distance to it
    (float32, computed exactly from the pair), ``batch_size`` vectors at a time."""
    import faiss

    x = _unit_rows(vectors)
    c = np.asarray(centroids)
    if c.ndim != 2 or len(c) == 0:
        raise ValueError(f"centroids must be a non-empty 2-d (k, d) array, got shape {c.shape}")
    if c.shape[1] != x.shape[1]:
        raise ValueError(f"vectors have {x.shape[1]} dims but centroids have {c.shape[1]}")
    if not np.isfinite(c).all():
        raise ValueError("centroids hold NaN or infinite values")
    _check_int("assign", "batch_size", batch_size, 1)
    c = np.ascontiguousarray(c, dtype=np.float32)
    index = faiss.IndexFlatL2(c.shape[1])
    if gpu_enabled(use_gpu):
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(c)
    cluster_id = np.empty(len(x), dtype=np.int64)
    distance = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), batch_size):
        block = x[start : start + batch_size]
        _, nearest = index.search(block, 1)
        ids = nearest[:, 0].astype(np.int64)
        diff = block - c[ids]
        cluster_id[start : start + len(block)] = ids
        distance[start : start + len(block)] = np.einsum("ij,ij->i", diff, diff)
    return cluster_id, distance


def assignment_table(keys, cluster_id: np.ndarray, distance: np.ndarray) -> pa.Table:
    """CLUSTER_ASSIGNMENT rows (key, cluster_id, distance) in ``keys`` order."""
    keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    cluster_id = np.asarray(cluster_id, dtype=np.int64)
    distance = np.asarray(distance, dtype=np.float32)
    if not len(keys) == len(cluster_id) == len(distance):
        raise ValueError(
            f"keys ({len(keys)}), cluster_id ({len(cluster_id)}) and distance ({len(distance)}) "
            "must have the same length"
        )
    table = pa.table(
        [keys, pa.array(cluster_id), pa.array(distance)], schema=CLUSTER_ASSIGNMENT_SCHEMA
    )
    validate(table, CLUSTER_ASSIGNMENT_SCHEMA)
    return table


# -- hierarchical k-means ---------------------------------------------------------------------


def scaled_levels(
    n_points: int, levels: tuple[int, ...] = DEFAULT_LEVELS, min_items_per_cluster: int = 5
) -> tuple[int, ...]:
    """``levels`` (clusters per level, bottom first) shrunk so every level has at least
    ``min_items_per_cluster`` items (points, or the centroids below) per cluster; levels that
    would keep a single cluster are dropped (a pool too small for any level gets one cluster)."""
    out: list[int] = []
    items = n_points
    for k in levels:
        k = min(k, items // min_items_per_cluster)
        if k < 2:
            break
        out.append(k)
        items = k
    return tuple(out) or (1,)


@dataclass(frozen=True)
class HierarchicalKMeansConfig:
    """``levels``: clusters per level, bottom (points) first, non-increasing. ``sample_sizes``:
    per level, the items nearest each centroid that a resampling step re-clusters (1: no
    resampling at that level; None: half the level's mean cluster size, at least 2). The other
    fields are :class:`KMeansConfig`'s, shared by every k-means run."""

    levels: tuple[int, ...] = DEFAULT_LEVELS
    sample_sizes: tuple[int, ...] | None = None
    resampling_steps: int = 10
    niter: int = 20
    seed: int = 0
    max_train_points: int | None = None
    init: Init = "kmeans++"
    batch_size: int = 65_536
    use_gpu: bool | None = None

    def __post_init__(self) -> None:
        owner = "HierarchicalKMeansConfig"
        if not self.levels:
            raise ValueError(f"{owner}.levels must name at least one level")
        for k in self.levels:
            _check_int(owner, "levels", k, 1)
        if any(upper > lower for lower, upper in zip(self.levels, self.levels[1:])):
            raise ValueError(f"{owner}.levels must not increase upwards, got {self.levels}")
        if self.sample_sizes is not None:
            if len(self.sample_sizes) != len(self.levels):
                raise ValueError(
                    f"{owner}.sample_sizes needs one size per level ({len(self.levels)}), "
                    f"got {self.sample_sizes}"
                )
            for size in self.sample_sizes:
                _check_int(owner, "sample_sizes", size, 1)
        _check_int(owner, "resampling_steps", self.resampling_steps, 0)
        _check_int(owner, "niter", self.niter, 1)
        _check_int(owner, "seed", self.seed, 0)
        _check_int(owner, "batch_size", self.batch_size, 1)
        _check_init(owner, self.init)
        if self.max_train_points is not None:
            _check_int(owner, "max_train_points", self.max_train_points, max(self.levels))

    def sample_size(self, level: int, n_items: int) -> int:
        """Items kept per cluster by ``level``'s resampling steps, over ``n_items`` items."""
        if self.sample_sizes is not None:
            return self.sample_sizes[level]
        return max(2, math.ceil(n_items / self.levels[level] / 2))

    def kmeans(self, level: int, step: int) -> KMeansConfig:
        """The k-means of ``level``'s resampling ``step`` (0: the first run), with its own seed."""
        seed = int(np.random.SeedSequence([self.seed, level, step]).generate_state(1)[0] >> 1)
        return KMeansConfig(
            k=self.levels[level],
            niter=self.niter,
            seed=seed,
            max_train_points=self.max_train_points,
            init=self.init,
            batch_size=self.batch_size,
            use_gpu=self.use_gpu,
        )


@dataclass(frozen=True, eq=False)
class ClusterLevel:
    """One level: unit ``centroids`` (k, d), and for each item of the level below (the points at
    level 0) its cluster here (``assignment``, int64) and squared L2 ``distance`` to it."""

    centroids: np.ndarray
    assignment: np.ndarray
    distance: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centroids)


@dataclass(frozen=True, eq=False)
class ClusterTree:
    """The levels of a hierarchical k-means, bottom first: ``levels[0]`` assigns the points."""

    levels: tuple[ClusterLevel, ...]

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a ClusterTree needs at least one level")
        for index, level in enumerate(self.levels):
            items = self.n_points if index == 0 else self.levels[index - 1].k
            if len(level.assignment) != items or len(level.distance) != items:
                raise ValueError(f"level {index} must assign {items} items")
            if items and not 0 <= level.assignment.min() <= level.assignment.max() < level.k:
                raise ValueError(f"level {index} assigns items to clusters outside [0, {level.k})")

    @property
    def n_points(self) -> int:
        return len(self.levels[0].assignment)

    def cluster_sizes(self) -> list[np.ndarray]:
        """Per level, the number of points under each cluster (int64)."""
        sizes = [np.ones(self.n_points, dtype=np.int64)]
        for level in self.levels:
            below = np.bincount(level.assignment, weights=sizes[-1], minlength=level.k)
            sizes.append(below.astype(np.int64))
        return sizes[1:]

    def point_clusters(self, level: int) -> np.ndarray:
        """Each point's cluster at ``level`` (int64)."""
        clusters = self.levels[0].assignment
        for upper in self.levels[1 : level + 1]:
            clusters = upper.assignment[clusters]
        return clusters


def _nearest_per_cluster(cluster_id: np.ndarray, distance: np.ndarray, size: int) -> np.ndarray:
    """Ascending rows of the ``size`` items nearest their centroid in every cluster."""
    order = np.lexsort((distance, cluster_id))
    sorted_ids = cluster_id[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return np.sort(order[rank < size])


def hierarchical_kmeans(vectors, config: HierarchicalKMeansConfig) -> ClusterTree:
    """Vo et al.'s hierarchical k-means with resampling over L2-normalised ``vectors``."""
    items = _unit_rows(vectors)
    if config.levels[0] > len(items):
        raise ValueError(
            f"HierarchicalKMeansConfig.levels[0] ({config.levels[0]}) exceeds the number of "
            f"vectors ({len(items)})"
        )
    levels: list[ClusterLevel] = []
    for level, k in enumerate(config.levels):
        centroids = train_kmeans(items, config.kmeans(level, 0))
        ids, dist = assign(items, centroids, config.batch_size, use_gpu=config.use_gpu)
        size = config.sample_size(level, len(items))
        steps = config.resampling_steps if size > 1 else 0
        for step in range(1, steps + 1):
            rows = _nearest_per_cluster(ids, dist, size)
            if len(rows) < k:  # too many clusters emptied to re-run k-means on the sample
                logger.info(
                    "level %d: resampling stops at step %d (%d items)", level, step, len(rows)
                )
                break
            centroids = train_kmeans(items[rows], config.kmeans(level, step))
            ids, dist = assign(items, centroids, config.batch_size, use_gpu=config.use_gpu)
        levels.append(ClusterLevel(centroids, ids, dist))
        items = centroids
    return ClusterTree(tuple(levels))


# -- balanced sampling ------------------------------------------------------------------------


def _split_budget(
    parent: np.ndarray, sizes: np.ndarray, budget: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Each child's share of its parent's budget (int64): per parent the largest cap x with
    ``sum(min(x, size)) <= budget`` (found by bisection for all parents at once), then one more
    for as many random children above the cap as the budget has left."""
    n_parents = len(budget)
    low = np.zeros(n_parents, dtype=np.int64)
    high = np.zeros(n_parents, dtype=np.int64)
    np.maximum.at(high, parent, sizes)
    while np.any(low < high):
        mid = (low + high + 1) // 2
        filled = np.bincount(parent, weights=np.minimum(mid[parent], sizes), minlength=n_parents)
        fits = filled <= budget
        low = np.where(fits, mid, low)
        high = np.where(fits, high, mid - 1)
    share = np.minimum(low[parent], sizes)
    left = budget - np.bincount(parent, weights=share, minlength=n_parents).astype(np.int64)
    above = sizes > low[parent]
    # Children above the cap first, in random order, within each parent: the first `left` gain one.
    order = np.lexsort((rng.random(len(sizes)), ~above, parent))
    by_parent = parent[order]
    starts = np.searchsorted(by_parent, np.arange(n_parents))
    rank = np.arange(len(order)) - starts[by_parent]
    share[order[above[order] & (rank < left[by_parent])]] += 1
    return share


def balanced_sample(tree: ClusterTree, target_size: int, seed: int = 0) -> np.ndarray:
    """Ascending int64 indices of ``target_size`` distinct points, spread evenly over the tree's
    clusters from the top level down (Vo et al.'s hierarchical sampling, random within leaves)."""
    _check_int("balanced_sample", "target_size", target_size, 0)
    if target_size > tree.n_points:
        raise ValueError(f"target_size ({target_size}) exceeds the {tree.n_points} points")
    rng = np.random.default_rng(seed)
    sizes = tree.cluster_sizes()
    top = tree.levels[-1]
    budget = _split_budget(np.zeros(top.k, dtype=np.int64), sizes[-1], np.array([target_size]), rng)
    for index in range(len(tree.levels) - 1, 0, -1):
        budget = _split_budget(tree.levels[index].assignment, sizes[index - 1], budget, rng)
    points = np.ones(tree.n_points, dtype=np.int64)
    taken = _split_budget(tree.levels[0].assignment, points, budget, rng)
    return np.flatnonzero(taken).astype(np.int64)
