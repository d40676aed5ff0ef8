"""``lvd decode``: decode and validate images, one status per row."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.commands.common import add_job_arguments, load_job_config, shard_inputs


def register(sub) -> None:
    parser = sub.add_parser("decode", help="decode and validate images (status per row)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="folder of ENCODED_IMAGE parquet shards")
    source.add_argument("--images", type=Path, help="folder of image files to pack first")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.engines import build_engine
    from curation.jobs.decode import run_decode

    cfg = load_job_config(ns)
    inputs = shard_inputs(cfg, ns.images, ns.input)
    with build_engine(cfg.engine) as engine:
        stats = run_decode(cfg, engine, inputs)
    print(json.dumps(stats, indent=2))
    return 0
