"""Frozen-feature evaluation of an embedder on a labelled train / val split.

The features are what ``lvd embed`` computes with the same model (:func:`load_embedder`): for a
DINOv2 backbone the L2-normalised ``x_norm_clstoken`` after a resize to 256 and a 224 centre crop
(SPEC.md §7), so our exported teacher, an official backbone or any other embedder is scored alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from curation.config import ConfigError
from curation.models.inference import BatchEmbedder
from pretrain.eval.knn import linear_probe, weighted_knn
from pretrain.eval.labelled import LabelledSplit

logger = logging.getLogger(__name__)


@dataclass
class SplitFeatures:
    features: np.ndarray  # [n_ok, dim] float32
    labels: np.ndarray  # [n_ok] int64 class ids
    failed: int  # images that could not be read or decoded (left out)


def check_classes(train: LabelledSplit, val: LabelledSplit) -> list[str]:
    """The class names (train's, sorted); an error when val has a class train lacks."""
    classes = train.classes
    unknown = sorted(set(val.classes) - set(classes))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5])
        raise ConfigError(
            f"val class(es) {shown} not in the train split (train classes: "
            f"{', '.join(repr(c) for c in classes[:10])}{', ...' if len(classes) > 10 else ''})"
        )
    return classes


def embed_split(
    split: LabelledSplit, classes: list[str], embedder: BatchEmbedder, what: str
) -> SplitFeatures:
    """Features of every readable image of ``split``; the others are logged and left out."""
    result = embedder.embed(split.loaders)
    for index, status, message in result.failures[:5]:
        logger.warning("%s image %s left out: %s (%s)", what, split.keys[index], status, message)
    if len(result.positions) == 0:
        raise ConfigError(f"no image of the {what} split could be read and decoded")
    class_id = {name: i for i, name in enumerate(classes)}
    labels = np.array([class_id[split.labels[i]] for i in result.positions], dtype=np.int64)
    return SplitFeatures(result.embeddings, labels, len(result.failures))


def evaluate_splits(
    train: LabelledSplit,
    val: LabelledSplit,
    embedder: BatchEmbedder,
    *,
    k: int = 20,
    temperature: float = 0.07,
    with_linear_probe: bool = False,
) -> dict:
    """Weighted k-NN (and optionally a linear probe) of ``embedder``'s features; a report dict."""
    classes = check_classes(train, val)
    train_features = embed_split(train, classes, embedder, "train")
    val_features = embed_split(val, classes, embedder, "val")
    knn = weighted_knn(
        train_features.features,
        train_features.labels,
        val_features.features,
        val_features.labels,
        k=k,
        temperature=temperature,
        n_classes=len(classes),
    )
    report = {
        "model_id": embedder.embedder.model_id,
        "k": k,
        "temperature": temperature,
        "knn_top1": knn["top1"],
        "knn_top5": knn["top5"],
        "train_images": int(len(train_features.labels)),
        "val_images": int(len(val_features.labels)),
        "classes": len(classes),
        "failed_images": train_features.failed + val_features.failed,
        "dim": int(train_features.features.shape[1]),
    }
    if with_linear_probe:
        probe = linear_probe(
            train_features.features,
            train_features.labels,
            val_features.features,
            val_features.labels,
        )
        report["linear_top1"] = probe["top1"]
    return report
