"""Copy-detection dedup and decontamination over SSCD-style descriptors (LVD-142M, SPEC.md §1).

Self-dedup: each image's ``k`` nearest neighbours by cosine (faiss; exact below a size, IVF above),
edges with similarity > ``threshold`` (0.6 in DINOv2), groups, one representative kept per group.
Groups are chaining-guarded by default (:func:`curation.index.components.greedy_star`: an image
joins a group only through a direct edge to its representative); ``guard=false`` gives plain
connected components, as in the paper. The representative is the image with the most pixels, then
the smallest key.

Decontamination: pool images with a neighbour among an evaluation set's images at similarity >
``eval_threshold`` (0.45 in DINOv2) mark their whole group ``eval_contaminated``: it is removed.

Two ways to find the pairs, same result for pairs that the ``k`` cut does not separate: one index
over the whole pool in one process (:func:`self_pairs`), or partitions around coarse centroids, each
vector in its ``replicas`` nearest so pairs near a boundary meet, searched one partition per task
(:class:`PartitionPairsStage`, any engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.index.components import (
    choose_representatives,
    component_stats,
    components_table,
    connected_components,
    greedy_star,
    labels_of,
    priority_rank,
)
from curation.index.knn import cross_pairs, knn_pairs, normalized
from curation.index.partition import pairs_within_partition
from curation.stages.base import Resources
from schemas import DEDUP_EDGE_SCHEMA, STATUS_OK, embedding_schema


@dataclass(frozen=True)
class CopyDedupConfig:
    k: int = 64  # nearest neighbours per image (SPEC: 64)
    threshold: float = 0.6  # cosine above which two images are copies (SPEC: 0.6)
    eval_threshold: float = 0.45  # the stricter threshold against evaluation sets (SPEC: 0.45)
    guard: bool = True  # chaining guard: members must match their representative directly
    index: Literal["auto", "flat", "ivf", "ivfpq"] = "auto"
    exact_limit: int = 50_000  # "auto": exact search up to this many images, IVF above
    nprobe: int = 16
    pq_bytes: int | None = None  # "ivfpq": bytes per code (candidates re-ranked exactly)
    partitions: int = 0  # >0: search in this many centroid partitions, one task each
    replicas: int = 2  # partitions each image joins (>= 2 so boundary pairs meet)
    seed: int = 0

    def __post_init__(self) -> None:
        check_choices(self)
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if not -1.0 <= self.eval_threshold <= 1.0 or not -1.0 <= self.threshold <= 1.0:
            raise ValueError("threshold and eval_threshold are cosines, in [-1, 1]")
        if self.partitions and not 1 <= self.replicas <= self.partitions:
            raise ValueError(f"replicas must be in [1, partitions], got {self.replicas}")

    def index_options(self) -> dict:
        return {
            "index": self.index,
            "exact_limit": self.exact_limit,
            "nprobe": self.nprobe,
            "pq_bytes": self.pq_bytes,
            "seed": self.seed,
        }


def self_pairs(vectors: np.ndarray, config: CopyDedupConfig) -> tuple[np.ndarray, ...]:
    """``(i, j, similarity)`` of the pool's copy pairs, one index over the whole pool."""
    return knn_pairs(vectors, config.k, config.threshold, **config.index_options())


def contaminated_rows(
    pool: np.ndarray, eval_set: np.ndarray, config: CopyDedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pool row, eval row, similarity)`` of pool images near an evaluation image."""
    return cross_pairs(pool, eval_set, config.k, config.eval_threshold, **config.index_options())


def group_copies(
    keys: list[str],
    pixel_count: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    config: CopyDedupConfig,
    contaminated: np.ndarray | None = None,
) -> tuple[pa.Table, dict]:
    """DEDUP_COMPONENT rows of the pool from its copy pairs (already above the threshold), and the
    group statistics (size histogram, the largest groups' keys)."""
    n = len(keys)
    rank = priority_rank(pixel_count, keys)
    if config.guard:
        representative = greedy_star(n, i, j, rank)
    else:
        representative = choose_representatives(connected_components(n, i, j), rank)
    labels = labels_of(representative)
    table = components_table(keys, labels, representative, contaminated)
    return table, component_stats(labels, keys)


@dataclass(frozen=True)
class PartitionSearchConfig:
    dedup: CopyDedupConfig
    dim: int  # the embedding width
    max_rows: int  # the largest partition: searched as one batch


class PartitionPairsStage:
    """One partition of the pool (EMBEDDING rows) -> its copy pairs (DEDUP_EDGE rows).

    The whole partition is one batch: exact search among its members. Pairs found in two
    partitions (an image sits in ``replicas`` of them) are merged by the job.
    """

    name = "copy_dedup_partition"
    output_schema = DEDUP_EDGE_SCHEMA
    resources = Resources(cpus=1)

    def __init__(self, config: PartitionSearchConfig):
        self.config = config.dedup
        self.input_schema = embedding_schema(config.dim)
        self.batch_size = max(1, config.max_rows)

    def setup(self) -> None:
        pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        ok = batch.filter(pa.compute.equal(batch.column("status"), STATUS_OK))
        n = ok.num_rows
        if n < 2:
            return DEDUP_EDGE_SCHEMA.empty_table()
        flat = ok.column("embedding").combine_chunks().flatten().to_numpy()
        vectors = normalized(flat.reshape(n, -1))
        return pairs_within_partition(
            ok.column("key"), vectors, self.config.k, self.config.threshold
        )
