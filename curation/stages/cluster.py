"""k-means clusters of the pool (``lvd cluster``): the settings, and the assignment stage.

Centroids are trained once, in the job, on a seeded sample of the pool's retrieval embeddings
(:func:`curation.index.kmeans.train_kmeans`); :class:`AssignClustersStage` then labels every pool
EMBEDDING shard with its nearest centroid, one engine task per shard (Ray tasks or Spark
partitions for large pools), writing CLUSTER_ASSIGNMENT. Cluster retrieval reads both.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation import storage
from curation.readers.embeddings import embedded_rows
from curation.stages.base import Resources
from schemas import CLUSTER_ASSIGNMENT_SCHEMA, embedding_schema

CENTROIDS = "centroids.npy"


@dataclass(frozen=True)
class ClusterConfig:
    """``k`` None: one cluster per ``points_per_cluster`` pool images (at least 2, at most
    100,000, the paper's k for a 744M pool). ``levels`` / ``resampling_steps``: the hierarchical
    k-means of balanced sampling (SPEC.md §3), scaled down to the pool's size."""

    k: int | None = None
    points_per_cluster: int = 50
    niter: int = 20
    seed: int = 0
    max_train_points: int | None = None  # None: 256 per centroid, capped at 4M
    pool: str = "embed_retrieval"
    levels: tuple[int, ...] = (1000, 100, 10)
    resampling_steps: int = 10

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError(f"cluster.k must be at least 1 (or null), got {self.k}")
        for name in ("points_per_cluster", "niter"):
            if getattr(self, name) < 1:
                raise ValueError(f"cluster.{name} must be at least 1, got {getattr(self, name)}")

    def clusters_for(self, n: int) -> int:
        if self.k is not None:
            if self.k > n:
                raise ValueError(f"cluster.k ({self.k}) exceeds the pool's {n} embedded images")
            return self.k
        return int(min(100_000, max(2, n // self.points_per_cluster), n))


def save_centroids(path, centroids: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(centroids, dtype=np.float32))
    storage.write_bytes(path, buffer.getvalue())


def load_centroids(path) -> np.ndarray:
    if not storage.exists(path):
        raise FileNotFoundError(f"no k-means centroids at {path}; run `lvd cluster` first")
    return np.load(io.BytesIO(storage.read_bytes(path)))


@dataclass(frozen=True)
class AssignConfig:
    dim: int
    centroids: str  # path or URI of the centroids .npy
    rows_per_call: int = 65_536


class AssignClustersStage:
    """Pool EMBEDDING rows -> CLUSTER_ASSIGNMENT (nearest centroid, squared L2 distance); rows
    without an embedding are left out."""

    name = "assign_clusters"
    output_schema = CLUSTER_ASSIGNMENT_SCHEMA
    resources = Resources(cpus=1)

    def __init__(self, config: AssignConfig):
        self.config = config
        self.input_schema = embedding_schema(config.dim)
        self.batch_size = config.rows_per_call
        self.centroids: np.ndarray | None = None

    def setup(self) -> None:
        self.centroids = load_centroids(self.config.centroids)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from curation.index.kmeans import assign, assignment_table

        batch, vectors = embedded_rows(batch, self.config.dim)
        if not batch.num_rows:
            return CLUSTER_ASSIGNMENT_SCHEMA.empty_table()
        ids, distance = assign(vectors, self.centroids)
        return assignment_table(batch.column("key"), ids, distance)
