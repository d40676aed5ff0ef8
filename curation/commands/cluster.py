"""``lvd cluster``: spherical k-means of the pool's retrieval embeddings (cluster retrieval)."""

from __future__ import annotations

import argparse
import json

from curation.commands.common import add_job_arguments, load_job_config


def register(sub) -> None:
    parser = sub.add_parser(
        "cluster",
        help="k-means of the pool's retrieval embeddings (faiss, spherical)",
        description="Reads runs/<name>/embed_retrieval/ and writes cluster_centroids/ and "
        "clusters/ (CLUSTER_ASSIGNMENT). Settings: cluster.k=... (default: one cluster per "
        "cluster.points_per_cluster=50 images) cluster.niter=20 cluster.max_train_points=... "
        "(see curation/stages/cluster.py, ClusterConfig).",
    )
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.engines import build_engine
    from curation.jobs.cluster import run_cluster

    cfg = load_job_config(ns)
    with build_engine(cfg.engine) as engine:
        stats = run_cluster(cfg, engine)
    print(json.dumps(stats, indent=2, default=str))
    return 0
