"""``lvd embed``: SSCD descriptors or DINOv2 retrieval embeddings for the pool, seeds or eval sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.commands.common import add_job_arguments, load_job_config, parquet_files


def register(sub) -> None:
    parser = sub.add_parser(
        "embed",
        help="embed images (copy-detection or retrieval model) into EMBEDDING shards",
        description="Model and inference settings are config keys: embed.model=sscd_resnet50 "
        "embed.checkpoint=sscd_disc_mixup.torchscript.pt embed.device=cuda embed.batch_size=256 "
        "embed.scales=[128,160,224] ... (see curation/stages/embed.py, EmbedConfig).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="folder of IMAGE_RECORD or ENCODED_IMAGE shards")
    source.add_argument("--images", type=Path, help="folder of image files (a seed or eval set)")
    source.add_argument("--tars", type=Path, help="folder of webdataset .tar shards")
    source.add_argument("--parquet", type=Path, help="folder of .parquet files with key + image")
    parser.add_argument(
        "--stage",
        help="output folder under the run (default: embed_sscd, or embed_retrieval for ViTs)",
    )
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.models.retrieval import is_vit_arch
    from curation.pipeline import build_engine
    from curation.sources import list_image_files, write_encoded_shards
    from curation.stages.embed import conform_parquet_inputs, index_webdataset_tars, run_embed

    cfg = load_job_config(ns)
    stage = ns.stage or ("embed_retrieval" if is_vit_arch(cfg.embed.model) else "embed_sscd")
    work = cfg.run_dir.root / f"{stage}_inputs"
    if ns.images:
        files = list_image_files(ns.images)
        if not files:
            raise FileNotFoundError(f"no image files under {ns.images}")
        inputs = write_encoded_shards(files, work, rows_per_shard=cfg.rows_per_shard)
    elif ns.tars:
        tars = sorted(Path(ns.tars).glob("*.tar"))
        if not tars:
            raise FileNotFoundError(f"no .tar files in {ns.tars}")
        inputs = index_webdataset_tars(tars, work)
    elif ns.parquet:
        inputs = conform_parquet_inputs(parquet_files(ns.parquet), work)
    else:
        inputs = parquet_files(ns.input)
    with build_engine(cfg.engine) as engine:
        stats = run_embed(cfg, engine, inputs, stage=stage)
    print(json.dumps(stats, indent=2))
    return 0
