"""Components of a duplicate graph, one representative each, and the chaining guard.

Nodes are row indices ``0..n-1``; edges are index pairs ``(i, j)`` already known to be duplicates
(cosine above the threshold, or Hamming distance within it).

**Representative policy** (issue 10): in every component the image with the largest pixel count
is kept; ties go to the smallest key. :func:`priority_rank` turns (pixel counts, keys) into one
rank per node (0 = most preferred, a permutation since keys are distinct); every function here
takes that rank, so the policy lives in one place.

**Chaining guard.** Plain connected components (union-find, as in LVD-142M) are transitive:
A~B and B~C put A and C together although A and C may be different pictures (a hub image such as
a meme template or a screenshot frame links many). :func:`greedy_star` instead lets an image join
a group only through a direct edge to the group's representative: nodes are visited in rank
order; an unassigned node becomes a representative and takes every unassigned node it has an
edge to. Then, for any thresholded edge list:

1. every member has a direct edge to its representative (it is within the threshold of it);
2. no two representatives share an edge (a neighbour of an earlier representative was taken by it);
3. a representative is the best-ranked member of its group (members are taken before their turn);
4. a member belongs to the best-ranked representative among its neighbours.

So A~B~C with A not ~ C stays two groups: if B ranks first, {A, B, C} share B's direct edges and do
form one group; if A ranks first, A takes B and C is left to start its own group. A group is at
most the closed neighbourhood of its representative, never a chain. The grouping restricted to one
connected component depends only on that component's edges and ranks, so components can be
guarded independently (one task per component on Spark or Ray) with the same result.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import DEDUP_COMPONENT_SCHEMA, DEDUP_REASON_KEPT

REASON_DUPLICATE = "duplicate"
REASON_CONTAMINATED = "eval_contaminated"


def _edges(n: int, i, j) -> tuple[np.ndarray, np.ndarray]:
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if i.shape != j.shape or i.ndim != 1:
        raise ValueError(f"i and j must be 1-d arrays of one length, got {i.shape} and {j.shape}")
    if len(i) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"edge endpoints must lie in [0, {n})")
    return i, j


def connected_components(n: int, i, j) -> np.ndarray:
    """int64 component label of each node, numbered by each component's smallest node."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    i, j = _edges(n, i, j)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = scipy_components(graph, directed=False)
    # Renumber by smallest member, whatever order scipy visits in.
    _, first = np.unique(labels, return_index=True)
    rank_of_label = np.empty(len(first), dtype=np.int64)
    rank_of_label[np.argsort(first)] = np.arange(len(first))
    return rank_of_label[labels]


def priority_rank(pixel_count, keys) -> np.ndarray:
    """Each node's rank under the representative policy: largest ``pixel_count`` first (null
    last), then smallest ``key``. 0 is the most preferred."""
    keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    pixels = pixel_count
    if pixels is None:
        pixels = pa.nulls(len(keys), pa.int64())  # sizes unknown: the key alone decides
    elif not isinstance(pixels, pa.Array | pa.ChunkedArray):
        pixels = pa.array(np.asarray(pixels))
    if len(pixels) != len(keys):
        raise ValueError(f"{len(pixels)} pixel counts for {len(keys)} keys")
    pixels = pc.fill_null(pixels.cast(pa.int64()), -1)  # unknown size: after every known one
    order = pc.sort_indices(
        pa.table({"pixels": pixels, "key": keys}),
        sort_keys=[("pixels", "descending"), ("key", "ascending")],
    ).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def choose_representatives(labels, rank) -> np.ndarray:
    """Index of each node's representative: the best-ranked node of its component."""
    labels = np.asarray(labels, dtype=np.int64)
    rank = np.asarray(rank, dtype=np.int64)
    if labels.shape != rank.shape:
        raise ValueError(f"{len(labels)} labels for {len(rank)} ranks")
    order = np.argsort(rank, kind="stable")
    component, first = np.unique(labels[order], return_index=True)
    best = np.empty(labels.max() + 1 if len(labels) else 0, dtype=np.int64)
    best[component] = order[first]
    return best[labels]


def greedy_star(n: int, i, j, rank) -> np.ndarray:
    """Representative index of each node under the chaining guard (see the module docstring).

    ``(i, j)`` is an undirected, already-thresholded edge list; ``rank`` as :func:`priority_rank`.
    Isolated nodes are their own representatives.
    """
    from scipy.sparse import coo_matrix

    i, j = _edges(n, i, j)
    rank = np.asarray(rank, dtype=np.int64)
    if len(rank) != n:
        raise ValueError(f"{len(rank)} ranks for {n} nodes")
    rep = np.arange(n, dtype=np.int64)
    if len(i) == 0:
        return rep
    loops = i != j
    rows = np.concatenate([i[loops], j[loops]])
    cols = np.concatenate([j[loops], i[loops]])
    adjacency = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    indptr, neighbours = adjacency.indptr, adjacency.indices
    assigned = np.zeros(n, dtype=bool)
    connected = np.flatnonzero(np.diff(indptr) > 0)  # isolated nodes need no visit
    for node in connected[np.argsort(rank[connected], kind="stable")]:
        if assigned[node]:
            continue
        assigned[node] = True
        around = neighbours[indptr[node] : indptr[node + 1]]
        taken = around[~assigned[around]]
        rep[taken] = node
        assigned[taken] = True
    return rep


def guarded_components(n: int, i, j, similarity, rank, threshold: float) -> np.ndarray:
    """Chaining-guarded representatives over cosine edges: edges with similarity > ``threshold``
    (float32 comparison, as in :mod:`curation.index.knn`), then :func:`greedy_star`."""
    keep = np.asarray(similarity, dtype=np.float32) > np.float32(threshold)
    return greedy_star(n, np.asarray(i)[keep], np.asarray(j)[keep], rank)


def guarded_hamming_components(n: int, i, j, distance, rank, max_distance: int) -> np.ndarray:
    """The same guard for perceptual-hash edges, where a lower distance is closer: edges with
    ``distance <= max_distance``, then :func:`greedy_star`."""
    keep = np.asarray(distance) <= max_distance
    return greedy_star(n, np.asarray(i)[keep], np.asarray(j)[keep], rank)


def labels_of(representative) -> np.ndarray:
    """Component labels from representatives, numbered by each component's smallest node."""
    representative = np.asarray(representative, dtype=np.int64)
    _, first, inverse = np.unique(representative, return_index=True, return_inverse=True)
    rank_of_label = np.empty(len(first), dtype=np.int64)
    rank_of_label[np.argsort(first)] = np.arange(len(first))
    return rank_of_label[inverse.reshape(-1)]


def size_histogram(labels) -> dict[int, int]:
    """``{component size: number of components of that size}``, sizes ascending."""
    sizes = np.bincount(np.asarray(labels, dtype=np.int64))
    sizes = sizes[sizes > 0]
    values, counts = np.unique(sizes, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def largest_components(labels, top: int = 10) -> list[np.ndarray]:
    """Member indices (ascending) of the ``top`` largest components with more than one member,
    largest first, ties by label."""
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(len(sizes)), -sizes))
    chosen = [c for c in order[:top] if sizes[c] > 1]
    return [np.flatnonzero(labels == c) for c in chosen]


def component_stats(labels, keys, top: int = 10) -> dict:
    """JSON-ready figures: node and component counts, the size histogram, the largest components'
    keys (for the stats file of a dedup run)."""
    labels = np.asarray(labels, dtype=np.int64)
    keys = list(keys)
    histogram = size_histogram(labels)
    return {
        "images": int(len(labels)),
        "components": int(sum(histogram.values())),
        "images_in_groups": int(sum(s * c for s, c in histogram.items() if s > 1)),
        "size_histogram": {str(s): c for s, c in histogram.items()},
        "largest": [[keys[m] for m in members] for members in largest_components(labels, top)],
    }


def components_table(keys, labels, representative, contaminated=None) -> pa.Table:
    """DEDUP_COMPONENT rows: every image, its component, its representative; the representative
    is kept unless its component is contaminated (``contaminated``: bool per node, any member
    marking the whole component), the others are duplicates."""
    keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    labels = np.asarray(labels, dtype=np.int64)
    representative = np.asarray(representative, dtype=np.int64)
    n = len(labels)
    is_rep = representative == np.arange(n)
    bad = np.zeros(n, dtype=bool)
    if contaminated is not None:
        touched = np.zeros(labels.max() + 1 if n else 0, dtype=bool)
        touched[labels[np.asarray(contaminated, dtype=bool)]] = True
        bad = touched[labels]
    reason = np.where(
        bad, REASON_CONTAMINATED, np.where(is_rep, DEDUP_REASON_KEPT, REASON_DUPLICATE)
    )
    return pa.table(
        {
            "key": keys,
            "component_id": pa.array(labels, pa.int64()),
            "representative_key": pc.take(keys, pa.array(representative)),
            "keep": pa.array(is_rep & ~bad, pa.bool_()),
            "reason": pa.array(reason, pa.string()),
        },
        schema=DEDUP_COMPONENT_SCHEMA,
    )
