"""Copy-detection metrics: micro-AP, recall at precision, kNN pairs, synthetic ground truth."""

import numpy as np
import pyarrow as pa
import pytest

from curation.eval.copy_detection import (
    evaluate_copy_detection,
    knn_pairs,
    micro_average_precision,
    recall_at_precision,
    synthetic_copy_pairs,
)


def test_micro_ap_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([True, False, True, False])
    # hits at ranks 1 and 3: (1/1 + 2/3) / 3 true pairs (one never predicted)
    assert micro_average_precision(scores, labels, 3) == pytest.approx((1 + 2 / 3) / 3)
    assert micro_average_precision(scores, labels, 2) == pytest.approx((1 + 2 / 3) / 2)
    assert recall_at_precision(scores, labels, 3, 0.9) == pytest.approx(1 / 3)
    assert recall_at_precision(scores, labels, 2, 0.6) == pytest.approx(1.0)


def test_knn_pairs_are_unique_unordered_and_exclude_self():
    x = np.eye(4, dtype=np.float32)
    x[1] = x[0]
    i, j, s = knn_pairs(x, k=2)
    assert np.all(i < j)
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)
    assert s[(i == 0) & (j == 1)][0] == pytest.approx(1.0)


def test_synthetic_pairs_group_copies_of_one_original():
    pool = pa.table(
        {
            "key": ["a", "b", "c", "d", "e", "f"],
            "kind": [
                "original",
                "near_duplicate",
                "exact_duplicate",
                "original",
                "eval_copy",
                "original",
            ],
            "source_key": [None, "a", "a", None, "eval-1", None],
        }
    )
    assert synthetic_copy_pairs(pool) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_perfect_descriptors_score_one_and_random_ones_less():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16)).astype(np.float32)
    x = np.concatenate([base, base[:10] + 0.01 * rng.normal(size=(10, 16)).astype(np.float32)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    keys = [f"k{i}" for i in range(60)]
    pairs = {(f"k{i}", f"k{50 + i}") for i in range(10)}
    assert evaluate_copy_detection(keys, x, pairs, k=5).micro_ap == pytest.approx(1.0)
    noise = rng.normal(size=x.shape).astype(np.float32)
    assert evaluate_copy_detection(keys, noise, pairs, k=5).micro_ap < 0.5
