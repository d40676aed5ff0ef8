"""Lloyd's k-means iterations, with Hartigan's point moves and split/merge centroid moves.

Each iteration assigns every row to its nearest centroid (a faiss flat search, ``batch_size`` rows
at a time, GPU when asked) and moves each centroid to the mean of its rows (re-normalised to unit
norm in the spherical mode): the arithmetic of ``faiss.Kmeans``. The search keeps each row's two
nearest centroids (the same search time at d = 256). A run stops early once the partition is a
fixed point (no row changes cluster and no move is made), as faiss and scikit-learn do.

**Pruned searches.** After the first iteration most rows stay near their cluster, and a full
search (every row against all k centroids: nearly all of a run's time) is mostly wasted. On CPU,
from k = ``PRUNE_MIN_K`` and ``PRUNE_MIN_ROWS_PER_CENTROID`` rows per centroid, each later search
compares a row only with the ``CANDIDATES`` nearest centroids of a reference cluster (its cluster
when the rows were last sorted) and proves the result with the triangle inequality (Elkan 2003's
centroid-to-centroid bound); rows it cannot prove get a full search, so the nearest centroid is
always the full search's. Where the bound holds for under half the rows (heavily overlapping
groups) the next ``PRUNE_PAUSE`` searches are full ones. The sorted copy of the rows doubles the
memory of the training sample. While most rows stay in their reference cluster, the per-cluster
sums are the reference partition's, corrected by the rows that left it.

Lloyd alone stops in the local minimum its start leads to. Two refinements, both on by default
(``reassign``) and both off in the last ``SETTLE_ITERATIONS``, so that the final iterations are
plain Lloyd and the centroids are the means of their nearest rows. Both also stop once a round
of them lowers the cost by under ``STALL`` (relative), the split/merge rounds only after
``IDLE_ROUNDS`` rounds in a row found no move; then a fixed point ends the run early (without
it, simultaneous Hartigan moves can swap a few dozen rows back and forth until the last
iteration):

* **Hartigan's move** (Hartigan & Wong 1979; Telgarsky & Vattani 2010, "Hartigan's method:
  k-means clustering without Voronoi", show its fixed points are a subset of Lloyd's): a row
  joins its second-nearest cluster j instead of its nearest i when
  ``n_j / (n_j + 1) d_j < n_i / (n_i - 1) d_i``, the exact condition for moving that one row to
  lower the cost once both means follow it. All rows move at once, scored with the distances of
  this iteration's search (the rule assumes the centroids are the current partition's means; they
  are the previous one's), so it costs no pass of its own. The spherical mode uses the same
  (Euclidean) rule. On the benchmark's overlapping set it lowers the cost more than 20 further
  plain iterations do.
* **Split/merge moves** for centroids in the wrong place (two sharing one dense group, one
  between two groups), the moves of ISODATA (Ball & Hall 1965) scored exactly, every
  ``REASSIGN_EVERY`` iterations: the split gain of cluster h is its cost at its own centroid minus
  that of a 2-means of its rows (started from its centroid and a row drawn in proportion to
  squared distance), tried for the clusters with the largest total and the largest mean cost (a
  merged pair of small groups has a small total but a large mean); the merge cost of cluster j is
  the rise in cost when its rows join the nearest other centroid's cluster and that centroid
  moves to the joint mean (Ward's criterion; an empty cluster costs 0). The best split is paired
  with the cheapest merge, the next with the next, while the gain exceeds the cost; the freed
  centroid takes the split's second half. Each move lowers the cost of the partition.
  scikit-learn's MiniBatchKMeans re-seeds clusters whose count falls below a share of the largest
  instead; a count says little when group sizes differ 100x.

Scores come from per-cluster sums, counts and squared norms, exact for either objective:
spherical (unit centroids, cost ``sum ||x||^2 + n - 2 |sum x|``) or Euclidean (free means, cost
``sum ||x||^2 - |sum x|^2 / n``). Clusters left empty are re-seeded at rows drawn in proportion to
squared distance. Seeded: the same inputs and seed give the same centroids.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse

logger = logging.getLogger(__name__)

SETTLE_ITERATIONS = 2  # final iterations of plain Lloyd
REASSIGN_EVERY = 2  # iterations between split/merge rounds (each costs ~1/7 of an iteration)
SPLIT_CANDIDATE_SHARE = 0.05  # of k, ranked by total cost and again by mean cost
MAX_SPLIT_CANDIDATES = 1024  # per ranking and iteration: bounds the rows gathered at large k
TWO_MEANS_ITERATIONS = 3
CANDIDATES = 8  # neighbouring centroids a row is compared with in a pruned search
PRUNE_MIN_K = 64  # below this many centroids every search is a full one
# ...and below this many rows per centroid: a pruned search also compares the centroids with
# each other (k x k), as much work as the full search (n x k) when n is a few times k
PRUNE_MIN_ROWS_PER_CENTROID = 16
RESORT_BELOW = 0.9  # share of rows the bound held for below which the rows are re-sorted
PRUNE_PAUSE = 3  # full searches after a pruned one where the bound held for under half the rows
STALL = 1e-6  # relative fall in cost over a round of moves below which the settling starts
IDLE_ROUNDS = 2  # split/merge rounds without a move before a stalled run stops the rounds
DELTA_SUMS_BELOW = 0.25  # share of rows off their reference cluster below which sums are updated


def _costs(sums: np.ndarray, counts: np.ndarray, squares: np.ndarray, spherical: bool):
    """Within-cluster squared-L2 cost of clusters with row ``sums`` (float64), ``counts`` and
    summed squared row norms, each at its own optimal centroid (unit norm when spherical)."""
    norms = np.linalg.norm(sums, axis=-1)
    if spherical:
        return squares + counts - 2.0 * norms
    return squares - norms**2 / np.maximum(counts, 1)


def _centroids(sums: np.ndarray, counts: np.ndarray, old: np.ndarray, spherical: bool):
    """Every non-empty cluster's centroid (float64); empty ones keep their ``old`` place."""
    new = old.astype(np.float64)
    if spherical:
        norms = np.linalg.norm(sums, axis=-1)
        keep = norms > 0
        new[keep] = sums[keep] / norms[keep, None]
    else:
        keep = counts > 0
        new[keep] = sums[keep] / counts[keep, None]
    return new


def _group_sums(x: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Row sums of ``x`` per group (float64), as one sparse (groups, n) x (n, d) product."""
    n = len(group)
    members = scipy.sparse.csr_matrix(
        (np.ones(n, dtype=np.float32), (group, np.arange(n))), shape=(n_groups, n)
    )
    return np.asarray(members @ x, dtype=np.float64)


def _two_means(rows, squares, offsets, a, b, spherical: bool):
    """A 2-means inside each segment ``rows[offsets[s]:offsets[s + 1]]`` at once, segment s
    started from centroids ``a[s]`` and ``b[s]``: per segment the two centroids, the cost of the
    split, and whether both sides kept rows."""
    sizes = np.diff(offsets)
    segment = np.repeat(np.arange(len(sizes)), sizes)
    # (segments, rows) membership: its data, one weight per row, selects a side of each segment.
    members = scipy.sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), np.arange(len(rows)), offsets),
        shape=(len(sizes), len(rows)),
    )
    totals = np.asarray(members @ rows, dtype=np.float64)
    total_squares = members @ squares
    for _ in range(TWO_MEANS_ITERATIONS + 1):
        direction = (b - a).astype(np.float32)[segment]
        threshold = 0.5 * (np.einsum("ij,ij->i", b, b) - np.einsum("ij,ij->i", a, a))
        side = np.einsum("ij,ij->i", rows, direction) > threshold[segment]
        members.data = side.astype(np.float32)
        count_b = np.add.reduceat(side.astype(np.int64), offsets[:-1])
        sum_b = np.asarray(members @ rows, dtype=np.float64)
        a = _centroids(totals - sum_b, sizes - count_b, a, spherical)
        b = _centroids(sum_b, count_b, b, spherical)
    squares_b = members @ squares
    cost = _costs(totals - sum_b, sizes - count_b, total_squares - squares_b, spherical)
    cost += _costs(sum_b, count_b, squares_b, spherical)
    return a, b, cost, (count_b > 0) & (count_b < sizes)


def _nearest_other(points: np.ndarray, block: int = 1024) -> np.ndarray:
    """Each point's nearest other point (squared L2; ties to the lower index), ``block`` rows of
    the (k, k) distance matrix at a time."""
    squares = np.einsum("ij,ij->i", points, points)
    nearest = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), block):
        rows = slice(start, start + block)
        distance = squares[rows, None] + squares[None, :] - 2.0 * (points[rows] @ points.T)
        own = np.arange(start, min(start + block, len(points)))
        distance[own - start, own] = np.inf
        nearest[rows] = distance.argmin(axis=1)
    return nearest


def _hartigan_moves(labels: np.ndarray, distance: np.ndarray, k: int) -> np.ndarray:
    """Which rows move to their second-nearest cluster by Hartigan's criterion, given the two
    nearest ``labels`` and squared ``distance`` of every row ((n, 2) each)."""
    counts = np.bincount(labels[:, 0], minlength=k).astype(np.float64)
    here = counts[labels[:, 0]]
    there = counts[np.maximum(labels[:, 1], 0)]
    leave = here / np.maximum(here - 1.0, 1.0) * distance[:, 0]
    join = there / (there + 1.0) * distance[:, 1]
    return (labels[:, 1] >= 0) & (here > 1) & (join < leave)


class _Lloyd:
    """State of one run: the rows, their squared norms, the search index and the generator."""

    def __init__(self, x, k, spherical, seed, batch_size, use_gpu):
        import faiss

        self.x, self.k, self.spherical, self.batch_size = x, k, spherical, batch_size
        self.squares = np.einsum("ij,ij->i", x, x)
        self.rng = np.random.default_rng(seed)
        self.index = faiss.IndexFlatIP(x.shape[1]) if spherical else faiss.IndexFlatL2(x.shape[1])
        self.prune = not use_gpu  # a GPU's full search is cheaper than the pruned one's loop
        self.sorted = None  # the rows sorted by the reference partition (see sort_rows)
        if use_gpu:
            self.index = faiss.index_cpu_to_all_gpus(self.index)

    def assign(self, centroids: np.ndarray):
        """Each row's nearest and second-nearest centroid (int64, the second -1 when k = 1) and
        squared L2 distances to them (float32, (n, 2) each), by a full search."""
        return self._search(centroids)

    def _search(self, centroids: np.ndarray, rows: np.ndarray | None = None):
        """Full search of ``rows`` (indices, in any order; None: every row in order)."""
        self.index.reset()
        self.index.add(centroids)
        n = len(self.x) if rows is None else len(rows)
        labels = np.empty((n, 2), dtype=np.int64)
        distance = np.empty((n, 2), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            end = min(start + self.batch_size, n)
            queries = self.x[start:end] if rows is None else self.x[rows[start:end]]
            distance[start:end], labels[start:end] = self.index.search(queries, 2)
        if self.spherical:  # inner products, to squared distances
            centroid_squares = np.einsum("ij,ij->i", centroids, centroids)
            squares = self.squares if rows is None else self.squares[rows]
            distance = squares[:, None] + centroid_squares[labels] - 2.0 * distance
        return labels, np.maximum(distance, 0)

    def sort_rows(self, labels: np.ndarray, sums: np.ndarray | None = None) -> None:
        """Keep a copy of the rows sorted by ``labels`` (the reference partition of the pruned
        search), gathered ``batch_size`` rows at a time, and the reference clusters' row
        ``sums`` (computed here when not given)."""
        self.order = np.argsort(labels, kind="stable")
        self.labels = labels.copy()
        self.reference = labels[self.order]
        self.starts = np.searchsorted(self.reference, np.arange(self.k + 1))
        if self.sorted is None:
            self.sorted = np.empty_like(self.x)
        for start in range(0, len(self.x), self.batch_size):
            rows = self.order[start : start + self.batch_size]
            np.take(self.x, rows, axis=0, out=self.sorted[start : start + len(rows)])
        self.sorted_squares = self.squares[self.order]
        self.reference_sums = _group_sums(self.x, labels, self.k) if sums is None else sums

    def assign_pruned(self, centroids: np.ndarray):
        """:meth:`assign` by a pruned search: each row is compared only with the ``CANDIDATES``
        nearest centroids of its reference centroid c (its cluster when :meth:`sort_rows` last
        ran) wherever the triangle inequality proves that enough. A centroid c' outside c's
        candidates lies at least R_c (c's distance to its nearest non-candidate) from c, so at
        least ``R_c - |x - c|`` from x; when the best candidate is at most that far it is the
        nearest centroid (Elkan 2003's centroid-to-centroid bound). Rows where the bound fails get
        a full search. The second label is the second-nearest candidate (exact where the bound
        also holds for it; otherwise a neighbouring cluster, which Hartigan's rule may still use:
        its criterion is exact for any cluster). Also returns the share of rows the bound held
        for. Rows of one reference cluster are contiguous in the sorted copy, so each cluster is
        one small matrix product and nothing is gathered per iteration."""
        k = len(centroids)
        m = min(CANDIDATES, k - 2)
        import faiss

        neighbours = faiss.IndexFlatL2(self.x.shape[1])
        neighbours.add(centroids)
        gaps, near = neighbours.search(centroids, m + 2)
        candidates = near[:, : m + 1]
        is_own = candidates == np.arange(k)[:, None]
        own, own_column = is_own.any(axis=1), is_own.argmax(axis=1)
        radius = np.where(own, np.sqrt(np.maximum(gaps[:, m + 1], 0)), 0.0)
        centroid_squares = np.einsum("ij,ij->i", centroids, centroids)
        products = np.empty((len(self.x), m + 1), dtype=np.float32)
        starts = self.starts
        for c in np.flatnonzero(np.diff(starts) > 0):
            rows = slice(starts[c], starts[c + 1])
            np.matmul(self.sorted[rows], centroids[candidates[c]].T, out=products[rows])
        near = candidates[self.reference]
        squared = centroid_squares[near]
        products *= -2.0
        squared += products
        squared += self.sorted_squares[:, None]
        np.maximum(squared, 0, out=squared)
        every = np.arange(len(self.x))
        first = squared.argmin(axis=1)
        pair = np.empty((len(self.x), 2), dtype=np.float32)
        pair[:, 0] = squared[every, first]
        to_own = squared[every, own_column[self.reference]]
        to_own = np.where(own[self.reference], np.sqrt(to_own), np.inf)
        squared[every, first] = np.inf
        second = squared.argmin(axis=1)
        pair[:, 1] = squared[every, second]
        labels = np.empty((len(self.x), 2), dtype=np.int64)
        distance = np.empty((len(self.x), 2), dtype=np.float32)
        labels[self.order, 0] = near[every, first]
        labels[self.order, 1] = near[every, second]
        distance[self.order] = pair
        unproven = self.order[np.sqrt(pair[:, 0]) > radius[self.reference] - to_own]
        if len(unproven):
            labels[unproven], distance[unproven] = self._search(centroids, unproven)
        return labels, distance, 1.0 - len(unproven) / max(len(self.x), 1)

    def sums(self, labels: np.ndarray) -> np.ndarray:
        """Per-cluster row sums (float64). Once the rows are sorted by a reference partition that
        most rows still follow, its sums corrected by the rows that left their reference cluster
        (the same sums, with a fraction of the arithmetic)."""
        if self.sorted is None:
            return _group_sums(self.x, labels, self.k)
        moved = np.flatnonzero(labels != self.labels)
        if len(moved) > DELTA_SUMS_BELOW * len(labels):
            return _group_sums(self.x, labels, self.k)
        rows = self.x[moved]
        joined = _group_sums(rows, labels[moved], self.k)
        return self.reference_sums + joined - _group_sums(rows, self.labels[moved], self.k)

    def split_merge(self, labels, distance, sums, counts, squares, centroids) -> int:
        """Apply the split/merge moves whose gain exceeds their cost to ``centroids`` (in place);
        the number of moves."""
        cost = _costs(sums, counts, squares, self.spherical)
        splits = self._splits(labels, distance, counts, cost, centroids)
        if not splits:
            return 0
        partner, merge_cost, merged = self._merges(sums, counts, squares, cost, centroids)
        order = np.argsort(merge_cost, kind="stable")
        used = np.zeros(self.k, dtype=bool)
        moves = next_merge = 0
        for gain, h, a, b in splits:
            if used[h]:
                continue
            while next_merge < self.k:
                j = order[next_merge]
                i = partner[j]
                if not (used[j] or used[i] or h in (i, j)):
                    break
                next_merge += 1
            if next_merge == self.k or gain <= merge_cost[j]:
                break
            used[[h, j]] = True
            if counts[j]:  # an empty j frees its centroid without moving its partner
                used[i] = True
                centroids[i] = merged[j]
            centroids[h], centroids[j] = a, b
            moves += 1
            next_merge += 1
        return moves

    def _splits(self, labels, distance, counts, cost, centroids):
        """(gain, cluster, centroid a, centroid b) of the candidate splits, best first."""
        share = min(MAX_SPLIT_CANDIDATES, math.ceil(SPLIT_CANDIDATE_SHARE * self.k))
        by_total = np.argsort(-cost, kind="stable")[:share]
        by_mean = np.argsort(-cost / np.maximum(counts, 1), kind="stable")[:share]
        candidates = np.unique(np.concatenate([by_total, by_mean]))
        candidates = candidates[counts[candidates] >= 2]
        if len(candidates) == 0:
            return []
        # The candidates' rows, grouped by candidate (segment), and each segment's offset.
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels, np.arange(self.k + 1), sorter=order)
        sizes = counts[candidates]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        segment = np.repeat(np.arange(len(candidates)), sizes)
        members = order[starts[candidates][segment] + np.arange(offsets[-1]) - offsets[segment]]
        # Second starting centroid: a row drawn in proportion to its squared distance.
        weights = np.cumsum(distance[members], dtype=np.float64)
        before = np.concatenate([[0.0], weights])[offsets[:-1]]
        totals = weights[offsets[1:] - 1] - before
        draws = before + self.rng.random(len(candidates)) * totals
        drawn = np.searchsorted(weights, draws, side="right")
        drawn = np.clip(drawn, offsets[:-1], offsets[1:] - 1)
        rows = self.x[members]
        a, b, split_cost, valid = _two_means(
            rows,
            self.squares[members].astype(np.float64),
            offsets,
            centroids[candidates],
            rows[drawn].astype(np.float64),
            self.spherical,
        )
        gain = cost[candidates] - split_cost
        keep = np.flatnonzero(valid & (totals > 0) & (gain > 0))
        keep = keep[np.lexsort((candidates[keep], -gain[keep]))]
        return [(gain[s], int(candidates[s]), a[s], b[s]) for s in keep]

    def _merges(self, sums, counts, squares, cost, centroids):
        """Each cluster's nearest other centroid, the cost of merging into it, and the merged
        centroid."""
        partner = _nearest_other(centroids.astype(np.float32))
        joint_sums = sums + sums[partner]
        joint_counts = counts + counts[partner]
        joint = _costs(joint_sums, joint_counts, squares + squares[partner], self.spherical)
        merge_cost = np.where(counts > 0, joint - cost - cost[partner], 0.0)
        merged = _centroids(joint_sums, joint_counts, centroids[partner], self.spherical)
        return partner, merge_cost, merged

    def reseed_empty(self, counts, distance, centroids, spare: np.ndarray) -> int:
        """Empty clusters (not in ``spare``) to rows drawn in proportion to squared distance;
        how many."""
        empty = np.flatnonzero((counts == 0) & ~spare)
        if len(empty) == 0:
            return 0
        weights = distance.astype(np.float64)
        p = weights / weights.sum() if weights.sum() > 0 else None
        if p is not None and np.count_nonzero(p) < len(empty):
            p = None
        rows = self.rng.choice(len(self.x), size=len(empty), replace=False, p=p)
        centroids[empty] = self.x[rows]
        return len(empty)


def lloyd(
    x: np.ndarray,
    centroids: np.ndarray,
    iterations: int,
    *,
    spherical: bool = True,
    reassign: bool = True,
    seed: int = 0,
    batch_size: int = 65_536,
    use_gpu: bool = False,
    hartigan: bool | None = None,
    free_means: bool = False,
) -> np.ndarray:
    """``iterations`` Lloyd iterations over float32 rows ``x`` from ``centroids`` (k, d): the
    ``(k, d)`` float32 centroids, unit norm when ``spherical``. ``reassign``: Hartigan's point
    moves and the split/merge moves (False: plain Lloyd); ``hartigan`` (None: as ``reassign``)
    turns the point moves alone on or off. ``free_means``: return the means of the last partition's
    clusters instead of its centroids (in the spherical mode, the partition's squared-L2 optimum:
    the unit centroids scaled to each cluster's mean length). ``x`` should be L2-normalised (the
    spherical cost assumes unit centroids, not unit rows)."""
    hartigan = reassign if hartigan is None else hartigan
    x = np.ascontiguousarray(x, dtype=np.float32)
    current = np.ascontiguousarray(centroids, dtype=np.float32)
    k = len(current)
    run = _Lloyd(x, k, spherical, seed, batch_size, use_gpu)
    rounds = [
        i
        for i in range(iterations)
        if reassign and k > 2 and i % REASSIGN_EVERY == 0 and i < iterations - SETTLE_ITERATIONS
    ]
    previous, means = None, False  # the last partition; whether `current` holds its means
    previous_sums = None  # the last partition's per-cluster sums
    prunable = run.prune and k >= PRUNE_MIN_K and len(x) >= PRUNE_MIN_ROWS_PER_CENTROID * k
    paused = 0  # full searches left before the next pruned one
    costs: list[float] = []  # of each iteration's starting centroids
    idle_rounds = 0  # split/merge rounds in a row that made no move
    resort = True  # whether the next pruned search re-sorts the rows by the last partition
    for iteration in range(iterations):
        if previous is None or not prunable or paused:
            nearest, distances = run.assign(current)
            paused, held = max(paused - 1, 0), 0.0
        else:
            if resort:
                run.sort_rows(previous, previous_sums)
            nearest, distances, held = run.assign_pruned(current)
            paused = PRUNE_PAUSE if held < 0.5 else 0
        resort = held < RESORT_BELOW
        labels, distance = nearest[:, 0], distances[:, 0]
        cost = float(distance.sum(dtype=np.float64))  # of the centroids this iteration starts from
        costs.append(cost)
        if len(costs) > REASSIGN_EVERY and costs[-1 - REASSIGN_EVERY] - cost <= STALL * cost:
            # The moves stopped paying: Hartigan's simultaneous moves can swap a few rows back
            # and forth for ever, so they stop; so do the split/merge rounds once the last
            # IDLE_ROUNDS made no move (each draws new starts, so one more may still find one).
            # Then a fixed point can end the run.
            hartigan = False
            if idle_rounds >= IDLE_ROUNDS:
                rounds = [r for r in rounds if r < iteration]
        moved_rows = 0
        if hartigan and k > 2 and iteration < iterations - SETTLE_ITERATIONS:
            move = _hartigan_moves(nearest, distances, k)
            labels = np.where(move, nearest[:, 1], labels)
            distance = np.where(move, distances[:, 1], distance)
            moved_rows = int(move.sum())
        counts = np.bincount(labels, minlength=k)
        sums = run.sums(labels)
        updated = _centroids(sums, counts, current, spherical)
        if free_means:  # of this partition, before any move changes the centroids
            cluster_means = _centroids(sums, counts, current, spherical=False)
        moved = np.zeros(k, dtype=bool)
        moves = 0
        if iteration in rounds:
            squares = np.bincount(labels, weights=run.squares, minlength=k)
            before = updated.copy()
            moves = run.split_merge(labels, distance, sums, counts, squares, updated)
            idle_rounds = 0 if moves else idle_rounds + 1
            moved = np.any(updated != before, axis=1)
        reseeded = run.reseed_empty(counts, distance, updated, moved)
        logger.debug(
            "iteration %d: cost %.6g, %d empty, %d split/merge moves, %d rows moved by Hartigan, "
            "bound held for %.3f",
            iteration,
            cost,
            int((counts == 0).sum()),
            moves,
            moved_rows,
            held,
        )
        current = np.ascontiguousarray(updated, dtype=np.float32)
        unchanged = means and previous is not None and np.array_equal(labels, previous)
        means = moves == 0 and reseeded == 0
        pending = any(later > iteration for later in rounds) and iteration not in rounds
        if unchanged and means and not pending:  # a fixed point: every later iteration the same
            logger.debug("converged after %d iterations", iteration + 1)
            break
        previous, previous_sums = labels, sums
    if free_means:
        return np.ascontiguousarray(cluster_means, dtype=np.float32)
    return current
