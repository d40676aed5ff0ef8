"""Weighted k-NN classification on frozen features (Wu et al. 2018, as DINO and DINOv2 evaluate).

Each test feature votes with its ``k`` most cosine-similar training features; a neighbour at
similarity ``s`` adds ``exp(s / T)`` to its class (DINOv2 normalises these weights with a softmax
over the ``k`` neighbours, which changes no ranking; we do the same, for stable exponentials). The
class with the largest vote is the top-1 prediction; top-5 is a hit when the true class is among
the five largest votes. Unlike the reference, a class that received no vote at all never counts as
a top-5 hit (with fewer than five voted classes the reference lets ``topk`` tie-breaking decide).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_features(values, what: str) -> torch.Tensor:
    features = torch.as_tensor(np.asarray(values, dtype=np.float32))
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(
            f"{what} must be a non-empty [n, dim] array, got shape {tuple(features.shape)}"
        )
    return features


def _as_labels(values, n: int, what: str) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(values, dtype=np.int64))
    if labels.shape != (n,):
        raise ValueError(
            f"{what} must hold one integer label per row ({n}), got {tuple(labels.shape)}"
        )
    if n and int(labels.min()) < 0:
        raise ValueError(f"{what} must be >= 0")
    return labels


def weighted_knn(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int | None = None,
    block_size: int = 1024,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (fractions in [0, 1]) of the weighted k-NN classifier.

    Features are ``[n, dim]`` arrays (L2-normalised here, so similarities are cosines), labels
    integer class ids. Test rows are scored ``block_size`` at a time: memory is one
    ``[block_size, n_train]`` similarity block, never ``n_test x n_train``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    train = F.normalize(_as_features(train_features, "train_features"), dim=1)
    test = F.normalize(_as_features(test_features, "test_features"), dim=1)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train features have dim {train.shape[1]}, test features {test.shape[1]}")
    train_y = _as_labels(train_labels, train.shape[0], "train_labels")
    test_y = _as_labels(test_labels, test.shape[0], "test_labels")
    seen = int(max(train_y.max(), test_y.max())) + 1
    n_classes = seen if n_classes is None else n_classes
    if n_classes < seen:
        raise ValueError(f"n_classes={n_classes} but labels go up to {seen - 1}")
    k = min(k, train.shape[0])
    top = min(5, n_classes)
    hits1 = hits5 = 0
    for start in range(0, test.shape[0], block_size):
        block, block_y = test[start : start + block_size], test_y[start : start + block_size]
        similarities, neighbours = (block @ train.T).topk(k, dim=1)
        weights = torch.softmax(similarities / temperature, dim=1)  # exp(s / T), rescaled per row
        votes = torch.zeros(block.shape[0], n_classes)
        votes.scatter_add_(1, train_y[neighbours], weights)
        ranked_votes, ranked = votes.topk(top, dim=1)
        hit = (ranked == block_y[:, None]) & (ranked_votes > 0)
        hits1 += int(hit[:, 0].sum())
        hits5 += int(hit.any(dim=1).sum())
    n = test.shape[0]
    return {"top1": hits1 / n, "top5": hits5 / n}


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    c: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Top-1 accuracy of a logistic-regression probe on frozen, L2-normalised features.

    A light stand-in for DINOv2's linear evaluation (SGD over a learning-rate grid, SPEC.md §7):
    one multinomial ``sklearn`` LogisticRegression with inverse regularisation ``c``.
    """
    from sklearn.linear_model import LogisticRegression

    train = F.normalize(_as_features(train_features, "train_features"), dim=1).numpy()
    test = F.normalize(_as_features(test_features, "test_features"), dim=1).numpy()
    train_y = _as_labels(train_labels, train.shape[0], "train_labels").numpy()
    test_y = _as_labels(test_labels, test.shape[0], "test_labels").numpy()
    if len(np.unique(train_y)) < 2:
        raise ValueError("a linear probe needs at least 2 classes in the training split")
    probe = LogisticRegression(C=c, max_iter=max_iter)
    probe.fit(train, train_y)
    return {"top1": float((probe.predict(test) == test_y).mean())}
