"""The cluster job (``lvd cluster``): spherical k-means over the pool's retrieval embeddings.

Trains the centroids on a seeded sample of ``<run>/<cluster.pool>/`` (read shard by shard, each
shard contributing its share: the pool is never loaded whole), writes them to
``cluster_centroids/centroids.npy``, then assigns every pool shard as one engine task into
``clusters/`` (CLUSTER_ASSIGNMENT). Stats: cluster count and the size distribution.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.compute as pc

from curation import storage
from curation.engines import Engine
from curation.index.kmeans import KMeansConfig, train_kmeans
from curation.jobs.config import CurationConfig
from curation.readers.embeddings import read_embeddings
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.cluster import CENTROIDS, AssignClustersStage, AssignConfig, save_centroids

logger = logging.getLogger(__name__)


def pool_rows(shards: list) -> list[int]:
    """Embedded rows per pool shard (from the ``status`` column only)."""
    counts = []
    for path in shards:
        status = storage.read_table(path, columns=["status"]).column("status")
        counts.append(int(pc.sum(pc.equal(status, "ok")).as_py() or 0))
    return counts


def training_sample(shards: list, total: int, size: int, seed: int) -> np.ndarray:
    """About ``size`` of the ``total`` vectors, drawn evenly from every shard (seeded), one shard
    in memory at a time."""
    fraction = min(1.0, size / max(total, 1))
    parts = []
    for index, path in enumerate(shards):
        _, vectors = read_embeddings([path])
        take = min(len(vectors), int(np.ceil(fraction * len(vectors))))
        rng = np.random.default_rng([seed, index])
        parts.append(vectors[np.sort(rng.choice(len(vectors), size=take, replace=False))])
    return np.concatenate(parts)


def run_cluster(cfg: CurationConfig, engine: Engine) -> dict:
    run, config = cfg.run_dir, cfg.cluster
    pool = run.stage(config.pool).outputs()
    if not pool:
        raise FileNotFoundError(
            f"no pool embeddings in {run.root}/{config.pool}: run `lvd embed` with a retrieval "
            "model on deduplicated_images/ first"
        )
    run.save_config(cfg)
    centroid_stage = run.stage("cluster_centroids")
    path = storage.join(centroid_stage.path, CENTROIDS)
    stats: dict = {}
    if not centroid_stage.is_complete():
        total = sum(pool_rows(pool))
        kmeans = KMeansConfig(
            k=config.clusters_for(total),
            niter=config.niter,
            seed=config.seed,
            max_train_points=config.max_train_points,
        )
        sample = training_sample(pool, total, kmeans.train_points, config.seed)
        logger.info(
            "k-means: %d clusters, trained on %d of %d vectors", kmeans.k, len(sample), total
        )
        centroids = train_kmeans(sample, kmeans)
        centroid_stage.path.mkdir(parents=True, exist_ok=True)
        save_centroids(path, centroids)
        centroid_stage.write_stats(
            {"k": kmeans.k, "trained_on": len(sample), "pool": total, "niter": config.niter}
        )
        centroid_stage.mark_complete()
    stats["cluster_centroids"] = centroid_stage.read_stats()
    dim = storage.read_schema(pool[0]).field("embedding").type.list_size
    spec = StageSpec(AssignClustersStage, AssignConfig(dim=dim, centroids=str(path)))
    clusters = run.stage("clusters")
    stats["clusters"] = run_stage(spec, pool, clusters, engine)
    ids = storage.read_table(clusters.outputs(), columns=["cluster_id"]).column("cluster_id")
    sizes = np.bincount(ids.to_numpy(), minlength=stats["cluster_centroids"]["k"])
    stats["sizes"] = {
        "empty": int((sizes == 0).sum()),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "max": int(sizes.max()),
    }
    clusters.write_stats({**clusters.read_stats(), "sizes": stats["sizes"]})
    return stats
