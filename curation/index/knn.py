"""Pairs of vectors above a cosine threshold among each vector's k nearest neighbours.

The copy-detection step of DINOv2's LVD-142M curation (arXiv 2304.07193, and SPEC.md section 1):
SSCD descriptors, cosine similarity, k = 64 nearest neighbours per image, edges with
similarity > 0.6 (0.45 between the pool and evaluation sets). Cosine is the inner product of
L2-normalised vectors. The index is faiss: exact ``IndexFlatIP`` up to ``exact_limit`` vectors,
IVF-Flat above it (IVF-PQ when ``pq_bytes`` is set, its candidates re-ranked exactly), trained on a
seeded sample, on a GPU when faiss has one. Queries run in batches, so no n x n matrix is ever held.

Every similarity returned is recomputed from the vectors by :func:`pair_similarities` (a float64
sum rounded to float32), whatever index found the pair: the value of a pair does not depend on the
index, the batch or the partition that found it, so in-process, Ray and Spark runs agree bit for bit.
The threshold is strict and compared in float32, the precision of the similarities.

**Density scores** (:class:`DensityScore`, :mod:`curation.index.calibration`): the score of a pair
is ``cosine - beta * (density_a + density_b) / 2``, where an image's density is the mean similarity
of its neighbours ranked ``lo..hi`` among the searched vectors (1-based, itself excluded: SSCD's
score normalisation with the pool as background). :func:`knn_edges` takes the densities from the
same search that finds the pairs (each query asks for ``max(k, hi)`` neighbours; no second pass):
exactly :func:`~curation.index.calibration.neighbour_density` for an exact index. Densities are not
known before the search ends, so the cosine filter during the search must keep every pair that the
score could accept: it assumes the lowest possible density (-1) for the other image, and the final
score decides. :func:`density_from_pairs` rebuilds the densities from emitted neighbour pairs, which
is how the partitioned search merges one image's neighbours from every partition it is in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.index.calibration import calibrated_scores
from curation.index.vectors import (  # noqa: F401 (re-exported)
    PAIR_CHUNK,
    normalized,
    pair_similarities,
    train_centroids,
)
from schemas import DEDUP_CANDIDATE_SCHEMA, DEDUP_EDGE_SCHEMA

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "ivf", "ivfpq", "join"]
INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq", "join")  # join: curation/index/ivf_join.py
_MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per centroid
# The search's own similarities (float32 BLAS) may differ from the recomputed ones by a few ulps:
# the density prefilter keeps this much slack so that the recomputed score alone decides.
_PREFILTER_SLACK = 1e-4


def _cross_similarities(queries: np.ndarray, refs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``queries[r] . refs[labels[r, c]]`` for every cell, like :func:`pair_similarities`."""
    rows = np.repeat(np.arange(len(labels)), labels.shape[1])
    sims = np.full(labels.size, -np.inf, dtype=np.float32)
    flat = labels.reshape(-1)
    valid = np.flatnonzero(flat >= 0)
    for start in range(0, len(valid), PAIR_CHUNK):
        cells = valid[start : start + PAIR_CHUNK]
        a = queries[rows[cells]].astype(np.float64)
        sims[cells] = np.einsum("ij,ij->i", a, refs[flat[cells]])
    return sims.reshape(labels.shape)


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest sqrt(n) (1,024 for 1M)."""
    return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))


def gpu_wanted(use_gpu: bool | None) -> bool:
    """Whether to run on a GPU: when faiss sees one, unless ``use_gpu`` is False."""
    import faiss

    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu and not available:
        raise RuntimeError(
            "use_gpu=True but this faiss sees no GPU: install the [gpu] extra (faiss-gpu) on a "
            "machine with a CUDA device, or pass use_gpu=None to fall back to the CPU"
        )
    return available if use_gpu is None else bool(use_gpu)


def _resolve_kind(n: int, index: str, exact_limit: int, pq_bytes: int | None) -> str:
    if index not in INDEX_KINDS:
        raise ValueError(f"index must be one of {INDEX_KINDS}, got {index!r}")
    if index != "auto":
        return index
    if n <= exact_limit:
        return "flat"
    return "ivf" if pq_bytes is None else "ivfpq"


def _sample(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= len(x):
        return x
    rows = np.random.default_rng(seed).choice(len(x), size=size, replace=False)
    return x[np.sort(rows)]


class _Index:
    """A faiss index over ``refs`` (unit rows), on the GPU when asked; keeps its GPU resources."""

    def __init__(
        self,
        refs: np.ndarray,
        kind: str,
        *,
        nlist: int | None,
        nprobe: int,
        pq_bytes: int | None,
        train_size: int,
        train_iterations: int,
        seed: int,
        batch: int,
        gpu: bool,
    ):
        import faiss

        n, d = refs.shape
        self.kind = kind
        self.resources = None
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        else:
            sample = _sample(refs, train_size, seed)
            nlist = nlist or default_nlist(n)
            nlist = max(1, min(nlist, len(sample) // _MIN_POINTS_PER_CENTROID or 1))
            centroids = train_centroids(
                sample, nlist, seed=seed, iterations=train_iterations, use_gpu=gpu
            )
            quantizer = faiss.IndexFlatIP(d)
            quantizer.add(centroids)  # a trained, full quantizer: IVF training skips k-means
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                if not pq_bytes or d % pq_bytes:
                    raise ValueError(
                        f"pq_bytes must divide the dimension {d} (one byte per sub-vector), "
                        f"got {pq_bytes}"
                    )
                index = faiss.IndexIVFPQ(
                    quantizer, d, nlist, pq_bytes, 8, faiss.METRIC_INNER_PRODUCT
                )
            index.train(sample)
            index.nprobe = min(nprobe, nlist)
            self.quantizer = quantizer  # the IVF index does not own it
            log.info("%s index: nlist=%d nprobe=%d over %d vectors", kind, nlist, index.nprobe, n)
        if gpu:
            self.resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self.resources, 0, index)
        for start in range(0, n, batch):
            index.add(refs[start : start + batch])
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)


def _top_pairs(
    labels: np.ndarray,
    sims: np.ndarray,
    rows: np.ndarray | None,
    k: int,
    threshold: np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column) cells of the first ``k`` valid neighbours per row above the threshold.

    A neighbour is valid when found (label >= 0) and, for a self search, not the row itself.
    """
    valid = labels >= 0
    if rows is not None:
        valid &= labels != rows[:, None]
    valid &= np.cumsum(valid, axis=1) <= k
    valid &= sims > threshold
    r, c = np.nonzero(valid)
    return r, c, labels[r, c]


@dataclass(frozen=True)
class DensityScore:
    """Score pairs by ``cosine - beta * (density_a + density_b) / 2`` (SSCD's normalisation,
    :func:`curation.index.calibration.calibrated_scores`); densities over neighbours ranked
    ``ranks = (lo, hi)`` (1-based, inclusive, the image itself excluded)."""

    ranks: tuple[int, int] = (5, 20)
    beta: float = 1.0

    def __post_init__(self) -> None:
        lo, hi = self.ranks
        if not 1 <= lo <= hi:
            raise ValueError(f"density ranks must satisfy 1 <= lo <= hi, got {self.ranks}")
        # A density is subtracted: with beta < 0 a crowded neighbourhood would raise the score,
        # and the cosine prefilter's bound (the lowest density) would no longer be one.
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"density beta must be a finite number >= 0, got {self.beta}")


class KnnEdges(NamedTuple):
    """Pairs ``i < j`` (sorted, each once) with their cosine and score; for density scores also
    each vector's density and its ``hi`` nearest neighbours as pairs (what the density came from).
    """

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray  # float32 cosine
    score: np.ndarray  # float32: the cosine, or the density-corrected score
    density: np.ndarray | None = None  # float32 per vector (density scores only)
    neighbours: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (i, j, cosine), i < j


def _rank_means(
    owner: np.ndarray, sims: np.ndarray, n: int, ranks: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """For each owner ``0..n-1``: the mean of its entries' similarities ranked ``lo..hi``
    (descending, 1-based) as float32, and how many entries it has (at most ``hi``).

    Fewer than ``hi`` entries: ranks ``min(lo, count)..count``, as
    :func:`curation.index.calibration.neighbour_density` does; none: 0. Summed in float64 over the
    sorted values, so the result does not depend on the entries' order."""
    lo, hi = ranks
    owner = np.asarray(owner, dtype=np.int64)
    sims = np.asarray(sims, dtype=np.float32)
    order = np.lexsort((-sims.astype(np.float64), owner))
    owner, sims = owner[order], sims[order]
    position = np.arange(len(owner)) - np.searchsorted(owner, owner)
    counts = np.minimum(np.bincount(owner, minlength=n), hi)
    first = np.minimum(lo, counts) - 1
    use = (position < counts[owner]) & (position >= first[owner])
    sums = np.bincount(owner[use], weights=sims[use].astype(np.float64), minlength=n)
    used = np.bincount(owner[use], minlength=n)
    means = np.divide(sums, used, out=np.zeros(n, dtype=np.float64), where=used > 0)
    return means.astype(np.float32), counts


def density_from_pairs(
    n: int, i: np.ndarray, j: np.ndarray, similarity: np.ndarray, ranks: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's density (float32) from undirected pairs ``(i, j, similarity)``: the mean of
    its pair similarities ranked ``lo..hi``, and how many it had (at most ``hi``).

    Given every vector's ``hi`` nearest neighbours as pairs (and any other pairs of vectors that
    were searched together), this is the density over the union of what was searched."""
    owner = np.concatenate([np.asarray(i, np.int64), np.asarray(j, np.int64)])
    sims = np.concatenate([np.asarray(similarity, np.float32)] * 2)
    return _rank_means(owner, sims, n, ranks)


def lower_bound_density(
    density: np.ndarray, counts: np.ndarray, ranks: tuple[int, int]
) -> np.ndarray:
    """A density no more neighbours can lower: the density itself where it is over a full
    ``hi`` neighbours (more candidates only raise each rank's similarity), else -1."""
    return np.where(np.asarray(counts) >= ranks[1], density, np.float32(-1.0)).astype(np.float32)


def density_scores(
    similarity: np.ndarray, density_i: np.ndarray, density_j: np.ndarray, beta: float
) -> np.ndarray:
    """``similarity - beta * (density_i + density_j) / 2`` in float32 (non-decreasing in the
    similarity, non-increasing in each density: rounding keeps the order)."""
    return calibrated_scores(similarity, density_i, density_j, beta)


def knn_edges(
    vectors: np.ndarray,
    k: int,
    threshold: float,
    *,
    density: DensityScore | None = None,
    exact_score: bool = True,
    index: IndexKind = "auto",
    exact_limit: int = 200_000,
    nlist: int | None = None,
    nprobe: int = 16,
    pq_bytes: int | None = None,
    train_size: int = 100_000,
    train_iterations: int = 10,
    batch: int = 16_384,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> KnnEdges:
    """Pairs among each vector's ``k`` nearest neighbours (self excluded, either direction) whose
    score is over ``threshold``: the cosine, or with ``density`` the density-corrected score
    (module docstring). Index settings as in :func:`knn_pairs`.

    ``exact_score=False`` (density only): keep every pair whose score *could* exceed the threshold
    once more neighbours are known, i.e. scored with :func:`lower_bound_density` of both ends:
    what one partition of a partitioned search emits, to be scored after its densities merge.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = normalized(vectors)
    n = len(x)
    none = np.zeros(0, np.int64)
    if n < 2:
        empty = np.zeros(0, np.float32)
        if density is None:
            return KnnEdges(none, none, empty, empty)
        return KnnEdges(none, none, empty, empty, np.zeros(n, np.float32), (none, none, empty))
    kind = _resolve_kind(n, index, exact_limit, pq_bytes)
    if kind == "join":  # IVF lists joined by matrix products (cosine scores only)
        if density is not None:
            raise ValueError("index=join scores cosine only; use flat or ivf for density scores")
        from curation.index.ivf_join import ivf_join_pairs

        i, j, sim = ivf_join_pairs(
            x,
            k,
            threshold,
            nlist=nlist,
            nprobe=nprobe,
            seed=seed,
            sample=train_size,
            train_iterations=train_iterations,
        )
        return KnnEdges(i, j, sim, sim)
    built = _Index(
        x,
        kind,
        nlist=nlist,
        nprobe=nprobe,
        pq_bytes=pq_bytes,
        train_size=train_size,
        train_iterations=train_iterations,
        seed=seed,
        batch=batch,
        gpu=gpu_wanted(use_gpu),
    )
    k = min(k, n - 1)
    hi = 0 if density is None else min(density.ranks[1], n - 1)
    cut = np.float32(threshold)
    found_i, found_j = [], []
    near_i, near_j, near_s = [], [], []
    densities = np.zeros(n, np.float32)
    counts = np.zeros(n, np.int64)
    for start in range(0, n, batch):
        queries = x[start : start + batch]
        sims, labels = built.search(queries, min(max(k, hi) + 1, n))  # +1: the query itself
        if kind == "ivfpq":
            sims = _cross_similarities(queries, x, labels)
            order = np.argsort(-sims, axis=1, kind="stable")
            sims = np.take_along_axis(sims, order, axis=1)
            labels = np.take_along_axis(labels, order, axis=1)
        rows = np.arange(start, start + len(queries))
        if density is None:
            r, _, j = _top_pairs(labels, sims, rows, k, cut)
        else:
            valid = (labels >= 0) & (labels != rows[:, None])
            rank = np.cumsum(valid, axis=1)
            dr, dc = np.nonzero(valid & (rank <= hi))
            dj = labels[dr, dc]
            ds = pair_similarities(x, rows[dr], dj)  # exact, like every similarity returned
            densities[rows], counts[rows] = _rank_means(dr, ds, len(rows), density.ranks)
            near_i.append(np.minimum(rows[dr], dj))
            near_j.append(np.maximum(rows[dr], dj))
            near_s.append(ds)
            # The other end's density is unknown yet: assume the lowest (-1).
            own = lower_bound_density(densities[rows], counts[rows], density.ranks)
            lowest = density.beta * (own.astype(np.float64) - 1.0) / 2
            need = (float(cut) + lowest - _PREFILTER_SLACK)[:, None]
            r, c = np.nonzero(valid & (rank <= k) & (sims > need))
            j = labels[r, c]
        i = rows[r]
        found_i.append(np.minimum(i, j))
        found_j.append(np.maximum(i, j))
    codes = np.unique(np.concatenate(found_i) * n + np.concatenate(found_j))
    i, j = codes // n, codes % n
    sim = pair_similarities(x, i, j)
    if density is None:
        keep = sim > cut  # the recomputed value decides, whatever rounding the index did
        return KnnEdges(i[keep], j[keep], sim[keep], sim[keep])
    if exact_score:
        score = density_scores(sim, densities[i], densities[j], density.beta)
    else:
        bound = lower_bound_density(densities, counts, density.ranks)
        score = density_scores(sim, bound[i], bound[j], density.beta)
    keep = score > cut
    codes = np.unique(np.concatenate(near_i) * n + np.concatenate(near_j))
    ni, nj = codes // n, codes % n
    neighbours = (ni, nj, pair_similarities(x, ni, nj))
    return KnnEdges(i[keep], j[keep], sim[keep], score[keep], densities, neighbours)


def knn_pairs(
    vectors: np.ndarray,
    k: int,
    threshold: float,
    *,
    index: IndexKind = "auto",
    exact_limit: int = 200_000,
    nlist: int | None = None,
    nprobe: int = 16,
    pq_bytes: int | None = None,
    train_size: int = 100_000,
    train_iterations: int = 10,
    batch: int = 16_384,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, similarity)``: each pair once, ``i < j``, sorted, cosine > ``threshold``, where
    ``j`` is among the ``k`` nearest neighbours of ``i`` (self excluded) or ``i`` among those of ``j``.

    ``index``: "flat" (exact), "ivf" (IVF-Flat), "ivfpq" (IVF-PQ with ``pq_bytes`` bytes a code;
    the k candidates of each query are re-ranked exactly) or "auto" (flat up to ``exact_limit``
    vectors, else IVF-PQ when ``pq_bytes`` is set, else IVF-Flat). IVF settings: ``nlist`` lists
    (default :func:`default_nlist`, capped so every centroid has 39 training points), ``nprobe``
    lists searched per query, k-means on ``train_size`` rows sampled with ``seed``.
    """
    found = knn_edges(
        vectors,
        k,
        threshold,
        index=index,
        exact_limit=exact_limit,
        nlist=nlist,
        nprobe=nprobe,
        pq_bytes=pq_bytes,
        train_size=train_size,
        train_iterations=train_iterations,
        batch=batch,
        seed=seed,
        use_gpu=use_gpu,
    )
    return found.i, found.j, found.similarity


def cross_pairs(
    queries: np.ndarray,
    references: np.ndarray,
    k: int,
    threshold: float,
    *,
    index: IndexKind = "auto",
    exact_limit: int = 200_000,
    nlist: int | None = None,
    nprobe: int = 16,
    pq_bytes: int | None = None,
    train_size: int = 100_000,
    train_iterations: int = 10,
    batch: int = 16_384,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(query_index, reference_index, similarity)`` sorted: each query's ``k`` nearest
    references with cosine > ``threshold`` (decontamination: pool images against an evaluation
    set). The index is built over ``references``; settings as in :func:`knn_pairs`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = normalized(queries)
    refs = normalized(references)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(q) == 0 or len(refs) == 0:
        return empty
    if q.shape[1] != refs.shape[1]:
        raise ValueError(f"queries are {q.shape[1]}-d but references {refs.shape[1]}-d")
    kind = _resolve_kind(len(refs), index, exact_limit, pq_bytes)
    built = _Index(
        refs,
        kind,
        nlist=nlist,
        nprobe=nprobe,
        pq_bytes=pq_bytes,
        train_size=train_size,
        train_iterations=train_iterations,
        seed=seed,
        batch=batch,
        gpu=gpu_wanted(use_gpu),
    )
    k = min(k, len(refs))
    cut = np.float32(threshold)
    out_q, out_r, out_s = [], [], []
    for start in range(0, len(q), batch):
        block = q[start : start + batch]
        _, labels = built.search(block, k)
        sims = _cross_similarities(block, refs, labels)  # exact, whatever the index
        r, c, ref = _top_pairs(labels, sims, None, k, cut)
        out_q.append(r + start)
        out_r.append(ref)
        out_s.append(sims[r, c])
    qi, ri, sim = np.concatenate(out_q), np.concatenate(out_r), np.concatenate(out_s)
    order = np.lexsort((ri, qi))
    return qi[order].astype(np.int64), ri[order].astype(np.int64), sim[order]


def edges_table(
    keys, i: np.ndarray, j: np.ndarray, sim: np.ndarray, score: np.ndarray | None = None
) -> pa.Table:
    """DEDUP_EDGE rows for index pairs over ``keys`` (distinct strings): ``src_key < dst_key`` by
    key order, sorted by (src_key, dst_key); with ``score``, DEDUP_CANDIDATE rows."""
    keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if pc.count_distinct(keys).as_py() != len(keys):
        raise ValueError("edges_table needs distinct keys: deduplicate keys before searching")
    if np.any(np.asarray(i) == np.asarray(j)):
        raise ValueError("a pair joins a vector to itself")
    a = pc.take(keys, pa.array(np.asarray(i, dtype=np.int64)))
    b = pc.take(keys, pa.array(np.asarray(j, dtype=np.int64)))
    swap = pc.greater(a, b)
    columns = {
        "src_key": pc.if_else(swap, b, a),
        "dst_key": pc.if_else(swap, a, b),
        "similarity": pa.array(np.asarray(sim, dtype=np.float32), pa.float32()),
    }
    schema = DEDUP_EDGE_SCHEMA
    if score is not None:
        columns["score"] = pa.array(np.asarray(score, dtype=np.float32), pa.float32())
        schema = DEDUP_CANDIDATE_SCHEMA
    table = pa.table(columns, schema=schema)
    return table.sort_by([("src_key", "ascending"), ("dst_key", "ascending")])
