"""``lvd shards``: the selected images written as LVD shards (WebDataset tars with Parquet
indexes, or Parquet shards with the image bytes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.commands.common import add_job_arguments, load_job_config, parquet_files


def register(sub) -> None:
    parser = sub.add_parser(
        "shards",
        help="write the selected images as LVD shards (webdataset tars + index, or parquet)",
        description="Reads runs/<name>/retrieved_images/ (`lvd retrieve`; or --sources) and "
        "writes shard_plan/, shard_samples/ and shards/ (shard-NNNNN.tar with "
        "shard-NNNNN.index.parquet, or shard-NNNNN.parquet). Settings are shards.<field>=value "
        "overrides: shards.format=webdataset|parquet shards.samples_per_shard=1000 "
        "shards.seed=0 shards.max_side=null shards.jpeg_quality=90 shards.row_group_size=100 "
        "(see curation/stages/shard.py, ShardConfig). Then `lvd manifest runs/<name>`.",
    )
    parser.add_argument(
        "--sources", type=Path, help="folder of SHARD_SOURCE parquet shards (default: the run's)"
    )
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.engines import build_engine
    from curation.jobs.shards import check_sources, run_shards

    cfg = load_job_config(ns)
    sources = check_sources(parquet_files(ns.sources)) if ns.sources else None
    with build_engine(cfg.engine) as engine:
        stats = run_shards(cfg, engine, sources)
    print(json.dumps(stats, indent=2, default=str))
    return 0
