"""k-nearest-neighbour pairs above a cosine threshold by an IVF matrix-multiply join.

The same pairs as :func:`curation.index.knn.knn_pairs` with an IVF index, computed the other way
round. faiss' IVF-Flat scans the lists of one query after another: every query reads ``nprobe``
lists from memory for a few flops per byte. Here every vector is stored in the list of its nearest
coarse centroid and probes the lists of its ``nprobe`` nearest (exactly IVF-Flat's search), but
the work is grouped by list: all the queries that probe a list are compared with its members in
one dense float32 matrix product ``queries @ members.T``, cut into blocks of at most
``max_block_bytes`` so that unbalanced lists (clustered data) keep memory bounded.

Cost: ``n * nlist * d`` (assignment) plus ``n * nprobe * (n / nlist) * d`` (join), balanced at
``nlist ~ sqrt(nprobe * n)`` (:func:`default_join_nlist`). With ``search_dims`` the k-means, the
assignment and the join run on an uncentred PCA projection of the vectors (trained on the same
sample) and keep candidates over ``threshold - filter_margin`` in that space: cheaper by
``d / search_dims``, at the price of candidates whose projected cosine falls under the margin.

Whatever the search space, every candidate is re-scored by
:func:`curation.index.knn.pair_similarities`, each query keeps its ``k`` best candidates by that
exact value, and a pair is kept when its exact float32 cosine is strictly over the threshold: the
returned similarities agree bit for bit with every other path of :mod:`curation.index.knn`.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from curation.index.vectors import normalized, pair_similarities, train_centroids

log = logging.getLogger(__name__)

# The block products' float32 similarities may differ from the exact ones by a few ulps: the
# full-dimension filter keeps this much slack so that the exact value alone decides.
_ROUNDING_SLACK = 1e-4
_ASSIGN_BATCH = 65_536
_COMPACT_EVERY = 1 << 22  # candidates buffered before each query's are cut to its best


def default_join_nlist(n: int, nprobe: int) -> int:
    """Lists balancing assignment and join cost: the power of two nearest ``sqrt(nprobe * n)``."""
    return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(nprobe * n)))))


def default_filter_margin(threshold: float, search_dims: int) -> float:
    """Four standard deviations of a projected cosine at the threshold: for isotropic data the
    cosine ``c`` of a pair measured on ``m`` of its dimensions spreads by ``(1 - c^2) / sqrt(m)``."""
    return 4.0 * (1.0 - min(1.0, threshold * threshold)) / math.sqrt(search_dims)


def block_tiles(rows: int, cols: int, max_block_bytes: int) -> list[tuple[slice, slice]]:
    """Tiles ``(row slice, column slice)`` of a ``rows x cols`` float32 product whose similarity
    block and its boolean mask (5 bytes a cell) fit in ``max_block_bytes``; at least one cell."""
    cells = max(1, max_block_bytes // 5)
    col_step = max(1, min(cols, cells // min(rows, 1024) if rows else cols))
    row_step = max(1, cells // col_step)
    return [
        (slice(r, min(r + row_step, rows)), slice(c, min(c + col_step, cols)))
        for c in range(0, cols, col_step)
        for r in range(0, rows, row_step)
    ]


def block_similarities(queries: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``queries @ members.T`` as float32 (one sgemm): the join's only dense product."""
    return queries @ members.T


def _projection(sample: np.ndarray, dims: int) -> np.ndarray:
    """``(d, dims)``: the top eigenvectors of the sample's uncentred second moment (the
    directions that best keep inner products), as float32."""
    moment = sample.T.astype(np.float64) @ sample.astype(np.float64)
    _, vectors = np.linalg.eigh(moment)
    return np.ascontiguousarray(vectors[:, ::-1][:, :dims], dtype=np.float32)


def _best_per_query(
    query: np.ndarray, member: np.ndarray, sim: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``keep`` most similar candidates of each query (ties: smaller member first)."""
    if len(query) == 0:
        return query, member, sim
    order = np.lexsort((member, -sim.astype(np.float64), query))
    query, member, sim = query[order], member[order], sim[order]
    starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
    rank = np.arange(len(query)) - np.repeat(starts, np.diff(np.r_[starts, len(query)]))
    best = rank < keep
    return query[best], member[best], sim[best]


def _assign(y: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """``(n, nprobe)`` int32: each row's ``nprobe`` nearest centroids, nearest first."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    probes = np.empty((len(y), nprobe), dtype=np.int32)
    for start in range(0, len(y), _ASSIGN_BATCH):
        _, nearest = index.search(y[start : start + _ASSIGN_BATCH], nprobe)
        probes[start : start + len(nearest)] = nearest
    return probes


def ivf_join_pairs(
    vectors: np.ndarray,
    k: int,
    threshold: float,
    *,
    nlist: int | None = None,
    nprobe: int = 16,
    search_dims: int | None = None,
    filter_margin: float | None = None,
    candidates_per_query: int | None = None,
    seed: int = 0,
    sample: int = 100_000,
    train_iterations: int = 10,
    max_block_bytes: int = 64 << 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, similarity)`` as :func:`curation.index.knn.knn_pairs` returns them: each pair
    once, ``i < j``, sorted, float32 cosine strictly over ``threshold``, ``j`` among the ``k``
    nearest of ``i`` (self excluded) or ``i`` among those of ``j``, among the vectors searched.

    ``nlist`` coarse lists (default :func:`default_join_nlist`, at most ``sample / 4``) from a
    spherical k-means on ``sample`` rows drawn with ``seed``; each vector searched in the lists
    of its ``nprobe`` nearest centroids. ``search_dims``: search on a PCA projection of that many
    dimensions, keeping candidates over ``threshold - filter_margin`` there (default
    :func:`default_filter_margin`), each query's ``candidates_per_query`` best (default ``2k``)
    re-ranked exactly; None (default) searches the vectors themselves. ``max_block_bytes``
    bounds each block product (and its mask).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if nprobe < 1:
        raise ValueError(f"nprobe must be >= 1, got {nprobe}")
    x = normalized(vectors)
    n, d = x.shape
    none = np.zeros(0, np.int64)
    if n < 2:
        return none, none, np.zeros(0, np.float32)
    k = min(k, n - 1)
    cut = np.float32(threshold)
    rows = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
    train = x[np.sort(rows)]

    if search_dims is not None and search_dims < d:
        basis = _projection(train, search_dims)
        y = np.empty((n, search_dims), dtype=np.float32)
        for start in range(0, n, _ASSIGN_BATCH):
            y[start : start + _ASSIGN_BATCH] = x[start : start + _ASSIGN_BATCH] @ basis
        y = normalized(y)
        train = normalized(train @ basis)
        margin = (
            default_filter_margin(threshold, search_dims)
            if filter_margin is None
            else filter_margin
        )
        keep = candidates_per_query or 2 * k
    else:
        y, margin, keep = x, _ROUNDING_SLACK, k
    lower = np.float32(float(cut) - margin)

    nlist = nlist or default_join_nlist(n, nprobe)
    nlist = max(1, min(nlist, n, max(1, len(train) // 4)))
    nprobe = min(nprobe, nlist)
    centroids = train_centroids(train, nlist, seed=seed, iterations=train_iterations)
    probes = _assign(y, centroids, nprobe)

    # Members of each list contiguous (by nearest centroid); queries grouped by probed list.
    member_order = np.argsort(probes[:, 0], kind="stable")
    member_start = np.searchsorted(probes[member_order, 0], np.arange(nlist + 1))
    query_order = np.argsort(probes.reshape(-1), kind="stable")
    query_start = np.searchsorted(probes.reshape(-1)[query_order], np.arange(nlist + 1))
    query_order //= nprobe
    del probes
    y_members = y[member_order]

    found_q, found_m, found_s = [], [], []
    buffered = 0
    step = max(1, nlist // 10)
    for cell in range(nlist):
        member_ids = member_order[member_start[cell] : member_start[cell + 1]]
        query_ids = query_order[query_start[cell] : query_start[cell + 1]]
        if len(member_ids) and len(query_ids):
            members = y_members[member_start[cell] : member_start[cell + 1]]
            for row_tile, col_tile in block_tiles(len(query_ids), len(member_ids), max_block_bytes):
                q_ids, m_ids = query_ids[row_tile], member_ids[col_tile]
                sims = block_similarities(y[q_ids], members[col_tile])
                r, c = np.nonzero(sims > lower)
                q, m, s = q_ids[r], m_ids[c], sims[r, c]
                other = q != m
                q, m, s = q[other], m[other], s[other]
                if len(r) and np.bincount(r).max() > keep:  # only then is there a cut to make
                    q, m, s = _best_per_query(q, m, s, keep)
                found_q.append(q)
                found_m.append(m)
                found_s.append(s)
                buffered += len(q)
        if buffered > _COMPACT_EVERY:
            q, m, s = _best_per_query(
                np.concatenate(found_q), np.concatenate(found_m), np.concatenate(found_s), keep
            )
            found_q, found_m, found_s, buffered = [q], [m], [s], len(q)
        if (cell + 1) % step == 0 or cell + 1 == nlist:
            log.info("ivf join: %d / %d lists, %d candidates", cell + 1, nlist, buffered)

    q, m, s = _best_per_query(
        np.concatenate(found_q), np.concatenate(found_m), np.concatenate(found_s), keep
    )
    exact = pair_similarities(x, q, m)
    q, m, exact = _best_per_query(q, m, exact, k)
    over = exact > cut
    codes = np.unique(np.minimum(q, m)[over] * n + np.maximum(q, m)[over])
    i, j = codes // n, codes % n
    sim = pair_similarities(x, i, j)
    keep_pair = sim > cut
    return i[keep_pair], j[keep_pair], sim[keep_pair]
