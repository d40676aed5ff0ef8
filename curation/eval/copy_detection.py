"""Copy-detection metrics: micro average precision over pooled pair predictions (DISC21, as in
SSCD, Pizzi et al. 2022) and recall at a fixed precision.

Every image of a collection queries its ``k`` nearest neighbours by cosine similarity; the unordered
pairs found are pooled across queries and sorted by similarity, and micro-AP is the area under the
precision-recall curve of that one ranked list, recall counted against *all* true copy pairs (so a
pair never retrieved costs recall). Used to score descriptors and, later, dedup decisions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pyarrow as pa

from curation.index.calibration import threshold_for_precision

COPY_KINDS = ("near_duplicate", "exact_duplicate")


def synthetic_copy_pairs(pool: pa.Table) -> set[tuple[str, str]]:
    """True copy pairs of a synthetic web's pool ground truth (``web.read("pool")``).

    An original and all its planted copies form one group; every pair inside a group is a copy
    pair (two copies of one original are copies of each other). Eval copies whose source is not in
    the pool form groups only with each other.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for key, kind, source in zip(
        pool.column("key").to_pylist(),
        pool.column("kind").to_pylist(),
        pool.column("source_key").to_pylist(),
    ):
        if kind == "original":
            groups[key].append(key)
        elif kind in COPY_KINDS:
            groups[source].append(key)
        else:
            groups[f"eval:{source}"].append(key)
    return {tuple(sorted(pair)) for members in groups.values() for pair in combinations(members, 2)}


def knn_pairs(
    embeddings: np.ndarray, k: int = 10, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unordered pairs ``(i < j)`` where either is among the other's ``k`` nearest neighbours by
    inner product (cosine for unit vectors), with their similarity. Exact, blockwise numpy."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    k = min(k, n - 1)
    if k <= 0:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    rows, cols, sims = [], [], []
    for start in range(0, n, block):
        scores = x[start : start + block] @ x.T
        local = np.arange(len(scores))
        scores[local, start + local] = -np.inf  # never your own neighbour
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(start + local, k))
        cols.append(top.reshape(-1))
        sims.append(np.take_along_axis(scores, top, axis=1).reshape(-1))
    i, j, s = np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pair_id = lo.astype(np.int64) * n + hi
    _, first = np.unique(pair_id, return_index=True)
    return lo[first], hi[first], s[first].astype(np.float32)


def micro_average_precision(scores: np.ndarray, labels: np.ndarray, n_positives: int) -> float:
    """Average precision of the ranked predictions, recall over ``n_positives`` true pairs."""
    if n_positives <= 0:
        raise ValueError("micro-AP needs at least one true pair")
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(labels, dtype=bool)[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / n_positives)


def recall_at_precision(
    scores: np.ndarray, labels: np.ndarray, n_positives: int, precision: float = 0.9
) -> float:
    """The largest recall reached at a score threshold whose precision is at least ``precision``."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(labels, dtype=bool)[order]
    tp = np.cumsum(hits)
    ok = tp / np.arange(1, len(hits) + 1) >= precision
    return float(tp[ok].max() / n_positives) if ok.any() else 0.0


@dataclass(frozen=True)
class CopyDetectionReport:
    micro_ap: float
    recall_at_p90: float
    n_true_pairs: int
    n_predictions: int
    n_true_pairs_found: int


def evaluate_copy_detection(
    keys: Sequence[str],
    embeddings: np.ndarray,
    true_pairs: Iterable[tuple[str, str]],
    k: int = 10,
) -> CopyDetectionReport:
    """Score descriptors of ``keys`` against the true copy pairs (keys not embedded still count)."""
    true = {tuple(sorted(p)) for p in true_pairs}
    i, j, scores = knn_pairs(embeddings, k)
    keys = list(keys)
    labels = np.fromiter(
        (tuple(sorted((keys[a], keys[b]))) in true for a, b in zip(i, j)), bool, len(i)
    )
    return CopyDetectionReport(
        micro_ap=micro_average_precision(scores, labels, len(true)),
        recall_at_p90=recall_at_precision(scores, labels, len(true), 0.9),
        n_true_pairs=len(true),
        n_predictions=len(i),
        n_true_pairs_found=int(labels.sum()),
    )


# --- a labelled set's scorer: all pairs, copy-original pairs, look-alikes ---------------------


@dataclass(frozen=True)
class CopySetTruth:
    """What a copy-detection set says about its images, by position in ``keys``.

    ``picture``: the picture each image shows (images of one picture are copies of each other);
    ``unedited``: the unedited image of a picture (its original, or a distractor); ``lookalikes``:
    position pairs ``(a < b)`` of different pictures built to look alike (not copies)."""

    keys: tuple[str, ...]
    picture: np.ndarray  # [n] int64 picture index
    unedited: np.ndarray  # [n] bool
    lookalikes: frozenset[tuple[int, int]]

    @property
    def n_pairs(self) -> int:
        sizes = np.bincount(self.picture)
        return int((sizes * (sizes - 1) // 2).sum())

    @property
    def n_copy_original_pairs(self) -> int:
        """Pairs of one picture's unedited image with one of its edited images."""
        unedited = np.bincount(self.picture[self.unedited], minlength=self.picture.max() + 1)
        edited = np.bincount(self.picture[~self.unedited], minlength=self.picture.max() + 1)
        return int((unedited * edited).sum())

    def labels(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.picture[i] == self.picture[j]


def copy_set_truth(
    keys: Sequence[str],
    picture_of: Mapping[str, str],
    unedited: Iterable[str],
    lookalike_pairs: Iterable[tuple[str, str]],
) -> CopySetTruth:
    """The :class:`CopySetTruth` of ``keys`` (an order of the set's images, e.g. embedding rows)."""
    keys = tuple(keys)
    index = {key: n for n, key in enumerate(keys)}
    names = sorted({picture_of[key] for key in keys})
    number = {name: n for n, name in enumerate(names)}
    unedited = set(unedited)
    pairs = frozenset(
        (min(index[a], index[b]), max(index[a], index[b]))
        for a, b in lookalike_pairs
        if a in index and b in index
    )
    return CopySetTruth(
        keys,
        np.array([number[picture_of[key]] for key in keys], np.int64),
        np.array([key in unedited for key in keys], bool),
        pairs,
    )


def score_copy_predictions(
    truth: CopySetTruth,
    i: np.ndarray,
    j: np.ndarray,
    scores: np.ndarray,
    *,
    precisions: tuple[float, ...] = (0.9, 0.95),
    flag_precision: float = 0.95,
) -> dict[str, float | int | None]:
    """Metrics of scored position pairs ``(i, j)`` (e.g. :func:`knn_pairs`) against ``truth``.

    ``pair_micro_ap``: over every same-picture pair. ``copy_original_micro_ap``: only predictions
    between an unedited and an edited image count, and only (original, own copy) pairs are true
    (the DISC21 query-reference setting). ``recall_at_p<NN>``: pair recall at that precision.
    ``lookalike_in_knn``: fraction of look-alike pairs among the predictions;
    ``lookalike_above_threshold``: fraction scoring above the threshold where pair precision
    reaches ``flag_precision`` (``threshold_at_p<NN>``; 0 when no threshold reaches it)."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    scores = np.asarray(scores, np.float64)
    labels = truth.labels(i, j)
    n_pairs, n_copy_original = truth.n_pairs, truth.n_copy_original_pairs
    out: dict[str, float | int | None] = {
        "pair_micro_ap": micro_average_precision(scores, labels, n_pairs) if n_pairs else 0.0
    }
    query_reference = truth.unedited[i] != truth.unedited[j]
    out["copy_original_micro_ap"] = (
        micro_average_precision(scores[query_reference], labels[query_reference], n_copy_original)
        if n_copy_original
        else 0.0
    )
    for p in precisions:
        out[f"recall_at_p{round(p * 100)}"] = (
            recall_at_precision(scores, labels, n_pairs, p) if n_pairs else 0.0
        )
    threshold, _ = threshold_for_precision(scores, labels, n_pairs, flag_precision)
    found = {(int(min(a, b)), int(max(a, b))): float(s) for a, b, s in zip(i, j, scores)}
    lookalike_scores = [found[pair] for pair in truth.lookalikes if pair in found]
    n_look = len(truth.lookalikes)
    out["lookalike_in_knn"] = len(lookalike_scores) / n_look if n_look else 0.0
    out["lookalike_above_threshold"] = (
        sum(s > threshold for s in lookalike_scores) / n_look
        if n_look and threshold is not None
        else 0.0
    )
    out[f"threshold_at_p{round(flag_precision * 100)}"] = threshold
    out.update(
        n_true_pairs=n_pairs,
        n_copy_original_pairs=n_copy_original,
        n_lookalike_pairs=n_look,
        n_predictions=len(i),
        n_true_pairs_found=int(labels.sum()),
    )
    return out


def precision_recall_above(
    scores: np.ndarray, labels: np.ndarray, n_positives: int, threshold: float
) -> tuple[float, float]:
    """Precision and recall of the predictions with ``score > threshold``."""
    accepted = np.asarray(scores) > threshold
    tp = int(np.asarray(labels, bool)[accepted].sum())
    n = int(accepted.sum())
    return (tp / n if n else 0.0), (tp / n_positives if n_positives else 0.0)
