"""``lvd retrieve``: pool images chosen for each seed dataset (as is, sample, cluster, balanced)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.commands.common import add_job_arguments, input_folder, load_job_config

MODES = ("as_is", "sample", "cluster", "balanced")


def register(sub) -> None:
    parser = sub.add_parser(
        "retrieve",
        help="select pool images that resemble seed datasets (LVD-142M retrieval)",
        description="Reads runs/<name>/embed_retrieval/ (`lvd embed embed.model=dinov2_vitl14 "
        "embed.checkpoint=... --input runs/<name>/deduplicated_images`), and clusters/ for "
        "cluster mode (`lvd cluster`); writes retrieval/ (RETRIEVAL_SELECTION, with provenance) "
        "and retrieved_images/ (what `lvd shards` writes). Seed datasets come from "
        "retrieve.seeds in a --config file (name, mode, images or embeddings, n, m, min_seeds, "
        "size, quota; see curation/stages/retrieve.py) or from --seed flags.",
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="NAME[:MODE]=DIR",
        help="a seed dataset: a folder of its images, or of its EMBEDDING shards (same model "
        "as the pool); MODE is sample (default), cluster or as_is; repeatable",
    )
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def seed_argument(value: str):
    """``NAME[:MODE]=DIR`` -> a SeedDataset (a one-line error when it does not parse)."""
    from curation.config import ConfigError
    from curation.readers.image_files import list_image_files
    from curation.stages.retrieve import SeedDataset

    label, sep, folder = value.partition("=")
    name, _, mode = label.partition(":")
    if not sep or not name:
        raise ConfigError(f"--seed {value!r}: expected NAME[:MODE]=DIR")
    mode = mode or "sample"
    if mode not in MODES[:3]:
        raise ConfigError(f"--seed {value!r}: mode must be one of {', '.join(MODES[:3])}")
    folder = input_folder(Path(folder), f"seed dataset {name!r}")
    try:
        if list_image_files(folder):
            return SeedDataset(name=name, mode=mode, images=folder)
        return SeedDataset(name=name, mode=mode, embeddings=str(folder))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run(ns: argparse.Namespace) -> int:
    import dataclasses

    from curation.engines import build_engine
    from curation.jobs.retrieve import run_retrieve

    cfg = load_job_config(ns)
    if ns.seed:
        seeds = tuple(seed_argument(value) for value in ns.seed)
        cfg = dataclasses.replace(
            cfg, retrieve=dataclasses.replace(cfg.retrieve, seeds=cfg.retrieve.seeds + seeds)
        )
    with build_engine(cfg.engine) as engine:
        stats = run_retrieve(cfg, engine)
    print(json.dumps(stats, indent=2, default=str))
    return 0
