"""Ray job: the curation pipeline on a Ray cluster (or a local Ray when none is given).

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

from curation.config import ConfigError, load_config
from curation.pipeline import CurationConfig, build_engine, run_curation


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="curate_ray", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, action="append", default=[], help="YAML overlay")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(CurationConfig, ns.config, [*ns.overrides, "engine.name=ray"])
    except ConfigError as exc:
        print(f"curate_ray: error: {exc}", file=sys.stderr)
        return 2
    if cfg.engine.ray_address is None and os.environ.get("RAY_ADDRESS"):
        cfg = replace(cfg, engine=replace(cfg.engine, ray_address="auto"))
    with build_engine(cfg.engine) as engine:
        try:
            stats = run_curation(cfg, engine)
        except ConfigError as exc:
            print(f"curate_ray: error: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(stats, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
