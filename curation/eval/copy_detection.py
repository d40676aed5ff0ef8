"""Copy-detection metrics: micro average precision over pooled pair predictions (DISC21, as in
SSCD, Pizzi et al. 2022) and recall at a fixed precision.

Every image of a collection queries its ``k`` nearest neighbours by cosine similarity; the unordered
pairs found are pooled across queries and sorted by similarity, and micro-AP is the area under the
precision-recall curve of that one ranked list, recall counted against *all* true copy pairs (so a
pair never retrieved costs recall). Used to score descriptors and, later, dedup decisions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pyarrow as pa

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
