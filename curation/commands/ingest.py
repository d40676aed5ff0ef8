"""``lvd ingest``: decode and filter downloaded images, then exact and near-exact dedup."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.commands.common import add_job_arguments, load_job_config, location, shard_inputs


def register(sub) -> None:
    parser = sub.add_parser(
        "ingest",
        help="validate downloaded images, then exact (sha256) and near-exact (phash) dedup",
        description="Reads runs/<name>/download/encoded/ (or --input / --images) and writes "
        "ingest/, dedup_exact/, phash/, dedup_near/ and unique_images/ under runs/<name>/.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=location, help="folder of ENCODED_IMAGE parquet shards")
    source.add_argument("--images", type=Path, help="folder of image files to pack first")
    parser.add_argument("--face-blur", action="store_true", help="blur detected faces")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.engines import build_engine
    from curation.jobs.ingest import run_ingest

    if ns.face_blur:
        ns.overrides = [*ns.overrides, "ingest.face_blur.enabled=true"]
    cfg = load_job_config(ns)
    inputs = shard_inputs(cfg, ns.images, ns.input)
    with build_engine(cfg.engine) as engine:
        stats = run_ingest(cfg, engine, inputs)
    print(json.dumps(stats, indent=2))
    return 0
