"""Ray job: the whole curation pipeline (curation/jobs/pipeline.py: download, ingest, copy dedup
and decontamination, retrieval, shards, manifest; as far as the config allows) on a Ray cluster,
or on a local Ray when none is given.

    ray job submit --working-dir . -- python jobs/curate_ray.py --config my_run.yaml \\
        download.url_list=/data/urls.parquet embed.checkpoint=/models/sscd_disc_mixup.torchscript.pt

Under ``ray job submit`` (RAY_ADDRESS set) it joins that cluster; every stage resumes where a
previous submission of the same run stopped. Prints each stage's stats as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from curation.cli import one_line
from curation.commands.common import check_output_folder
from curation.config import load_config
from curation.download.url_lists import url_list_files
from curation.engines import build_engine
from curation.jobs.config import CurationConfig
from curation.jobs.errors import USER_ERRORS
from curation.jobs.pipeline import run_pipeline


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curate_ray", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, action="append", default=[], help="YAML overlay")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the traceback, not one line"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(CurationConfig, ns.config, [*ns.overrides, "engine.name=ray"])
        # Inputs and outputs are checked before Ray starts (seconds to minutes on a cluster).
        if cfg.download.url_list is not None:
            url_list_files(cfg.download.url_list)
        check_output_folder(cfg.run_dir.root, "run folder (runs_dir/name)")
        if cfg.engine.ray_address is None and os.environ.get("RAY_ADDRESS"):
            cfg = replace(cfg, engine=replace(cfg.engine, ray_address="auto"))
        with build_engine(cfg.engine) as engine:
            stats = run_pipeline(cfg, engine)
    except USER_ERRORS as exc:  # the same one-line errors as the lvd CLI
        if ns.debug:
            raise
        print(f"curate_ray: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
