"""``lvd dedup``: copy-detection dedup of a run's embeddings, and decontamination against
evaluation sets."""

from __future__ import annotations

import argparse
import json

from curation import storage
from curation.commands.common import (
    Location,
    add_job_arguments,
    input_folder,
    load_job_config,
    location,
    parquet_files,
)


def register(sub) -> None:
    parser = sub.add_parser(
        "dedup",
        help="copy-detection dedup (faiss kNN graph, threshold, groups) and decontamination",
        description="Reads runs/<name>/embed_sscd/ (or --embeddings) and writes dedup_edges/, "
        "dedup_copy/ and deduplicated_images/. Settings are dedup.<field>=value overrides: "
        "dedup.k=64 dedup.score=auto dedup.threshold=... dedup.eval_threshold=0.45 "
        "dedup.guard=true dedup.partitions=0 ... (see curation/stages/copy_dedup.py, "
        "CopyDedupConfig). Embeddings of a descriptor checkpoint that stores a score calibration "
        "are deduped with its score and threshold unless dedup.score / dedup.threshold say "
        "otherwise (dedup.use_calibration=false ignores it); else cosine > 0.6. The stats say "
        "which score and threshold were used and where they came from.",
    )
    parser.add_argument(
        "--embeddings", type=location, help="folder of EMBEDDING shards of the pool"
    )
    parser.add_argument(
        "--records", type=location, help="folder of the pool's IMAGE_RECORD shards (pixel counts)"
    )
    parser.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an evaluation set: a folder of its EMBEDDING shards (same model: `lvd embed "
        "--images/--tars/--parquet ... --stage embed_eval_NAME`) or of its images (embedded "
        "here with the run's embed settings); repeatable",
    )
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def eval_argument(value: str) -> tuple[str, Location]:
    from curation.config import ConfigError
    from curation.safe_names import UnsafeNameError, check_component

    name, sep, folder = value.partition("=")
    if not sep:
        name, folder = location(value).name, value
    try:
        check_component(name, "evaluation set name")
    except UnsafeNameError as exc:
        raise ConfigError(str(exc)) from None
    return name, input_folder(folder, f"evaluation set {name!r}")


def run(ns: argparse.Namespace) -> int:
    from curation.engines import build_engine
    from curation.jobs.decode import pack_folder
    from curation.jobs.dedup import run_dedup
    from curation.jobs.embed import run_embed
    from curation.readers.image_files import list_image_files

    cfg = load_job_config(ns)
    embeddings = parquet_files(ns.embeddings) if ns.embeddings else None
    records = parquet_files(ns.records) if ns.records else None
    evals = dict(eval_argument(value) for value in ns.eval)
    with build_engine(cfg.engine) as engine:
        eval_sets = {}
        for name, folder in evals.items():
            if not storage.is_uri(folder) and list_image_files(folder):
                inputs = pack_folder(cfg, folder, into=f"embed_eval_{name}_inputs")
                run_embed(cfg, engine, inputs, stage=f"embed_eval_{name}")
                eval_sets[name] = cfg.run_dir.stage(f"embed_eval_{name}").outputs()
            else:
                eval_sets[name] = parquet_files(folder)
        if cfg.engine.name == "spark":  # the partitioned Spark job, not the generic stage
            from curation.jobs.dedup_spark import run_dedup_spark

            stats = run_dedup_spark(cfg, engine, embeddings, records, eval_sets)
        else:
            stats = run_dedup(cfg, engine, embeddings, records, eval_sets)
    print(json.dumps(stats, indent=2, default=str))
    return 0
