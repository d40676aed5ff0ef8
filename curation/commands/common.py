"""Arguments shared by job subcommands: ``--config`` overlays, ``key=value`` overrides, engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from curation.config import load_config
from curation.engines import ENGINES


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=sorted(ENGINES), help="engine (default: local)")
    parser.add_argument("--run", help="run name under runs_dir")
    parser.add_argument(
        "--config", type=Path, action="append", default=[], help="YAML config overlay (repeatable)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. engine.name=ray"
    )


def load_job_config(ns: argparse.Namespace):
    """The resolved CurationConfig: defaults, then ``--config`` files, then overrides and flags."""
    from curation.pipeline import CurationConfig

    overrides = list(ns.overrides)
    if getattr(ns, "engine", None):
        overrides.append(f"engine.name={ns.engine}")
    if getattr(ns, "run", None):
        overrides.append(f"name={ns.run}")
    return load_config(CurationConfig, ns.config, overrides)


def parquet_files(folder: Path) -> list[Path]:
    """The ``*.parquet`` shards of ``folder`` in name order; an error if there are none."""
    paths = sorted(Path(folder).glob("*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no .parquet shards in {folder}")
    return paths


def shard_inputs(cfg, images: Path | None, shards: Path | None) -> list[Path] | None:
    """Input shards named on the command line: a folder of images (packed into the run first) or
    a folder of parquet shards; None when neither was given (the stage reads its run's own)."""
    from curation.pipeline import pack_folder

    if images:
        return pack_folder(cfg, images)
    if shards:
        return parquet_files(shards)
    return None
