"""``lvd run PIPELINE.yaml``: the whole curation on a user's URL lists, seed and evaluation sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.commands.common import add_job_arguments, load_job_config


def register(sub) -> None:
    parser = sub.add_parser(
        "run",
        help="the whole curation pipeline from a pipeline file (resumable)",
        description="Download -> ingest -> copy-detection embeddings -> dedup and "
        "decontamination -> retrieval embeddings -> k-means -> retrieval -> shards -> manifest, "
        "each step skipped when finished, so rerunning the same command resumes. The pipeline "
        "file is a config overlay (see examples/): download.url_list, embed.checkpoint (or "
        "pipeline.train_descriptor: true), pipeline.eval_sets, retrieve.seeds, "
        "pipeline.retrieval_model / retrieval_checkpoint, shards.*.",
    )
    parser.add_argument("pipeline", type=Path, metavar="PIPELINE.yaml", help="the pipeline file")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.config import ConfigError
    from curation.engines import build_engine
    from curation.jobs.pipeline import run_pipeline

    if "=" in ns.pipeline.name and not ns.pipeline.exists():
        raise ConfigError(
            f"give the pipeline file first: lvd run PIPELINE.yaml [key=value ...]; got {ns.pipeline}"
        )
    if not ns.pipeline.is_file():
        raise FileNotFoundError(f"pipeline file {ns.pipeline} does not exist")
    ns.config = [ns.pipeline, *ns.config]
    cfg = load_job_config(ns)
    with build_engine(cfg.engine) as engine:
        stats = run_pipeline(cfg, engine)
    print(json.dumps(stats, indent=2, default=str))
    return 0
