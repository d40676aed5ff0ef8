"""``lvd embed``: SSCD descriptors or DINOv2 retrieval embeddings for the pool, seeds or eval sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.commands.common import (
    add_job_arguments,
    load_job_config,
    location,
    parquet_files,
    tar_files,
)


def register(sub) -> None:
    parser = sub.add_parser(
        "embed",
        help="embed images (copy-detection or retrieval model) into EMBEDDING shards",
        description="Model and inference settings are config keys: embed.model=sscd_resnet50 "
        "embed.checkpoint=sscd_disc_mixup.torchscript.pt embed.device=cuda embed.batch_size=256 "
        "embed.scales=[128,160,224] ... (see curation/stages/embed.py, EmbedConfig).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", type=location, help="folder of IMAGE_RECORD or ENCODED_IMAGE shards"
    )
    source.add_argument("--images", type=Path, help="folder of image files (a seed or eval set)")
    source.add_argument("--tars", type=location, help="folder of webdataset .tar shards")
    source.add_argument(
        "--parquet", type=location, help="folder of .parquet files with key + image"
    )
    parser.add_argument(
        "--stage",
        help="output folder under the run (default: embed_sscd, or embed_retrieval for ViTs)",
    )
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.engines import build_engine
    from curation.jobs.decode import pack_folder
    from curation.jobs.embed import run_embed
    from curation.models.retrieval import is_vit_arch
    from curation.readers.input_shards import (
        IMAGE_INPUT_SCHEMAS,
        check_input_shards,
        conform_parquet_inputs,
        index_webdataset_tars,
    )

    cfg = load_job_config(ns)
    stage = ns.stage or ("embed_retrieval" if is_vit_arch(cfg.embed.model) else "embed_sscd")
    work = cfg.run_dir.root / f"{stage}_inputs"
    if ns.images:
        inputs = pack_folder(cfg, ns.images, into=work.name)
    elif ns.tars:
        inputs = index_webdataset_tars(tar_files(ns.tars), work)
    elif ns.parquet:
        inputs = conform_parquet_inputs(parquet_files(ns.parquet), work)
    else:
        inputs = check_input_shards(parquet_files(ns.input), tuple(IMAGE_INPUT_SCHEMAS))
    with build_engine(cfg.engine) as engine:
        stats = run_embed(cfg, engine, inputs, stage=stage)
    print(json.dumps(stats, indent=2))
    return 0
