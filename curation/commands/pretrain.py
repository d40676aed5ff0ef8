"""``lvd pretrain``: DINOv2 pretraining on LVD shards or a plain folder of unlabeled images."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "pretrain",
        help="pretrain a DINOv2 ViT on curated shards or a folder of unlabeled images",
        description="Training settings are config keys, e.g. backbone.arch=vit_small "
        "batch_size_per_rank=32 optim.epochs=10 crops.global_crops_size=224 "
        "(see pretrain/train/config.py, PretrainConfig). Rerunning with the same --out "
        "resumes from its newest checkpoint at the exact next sample.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--shards",
        type=Path,
        help="LVD shards: a shard index .parquet (with its tars), a folder holding one, or a "
        "folder of Parquet shards with key and image columns",
    )
    source.add_argument("--images", type=Path, help="folder of unlabeled image files")
    parser.add_argument(
        "--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl"
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes on this machine (above 1: launched with torchrun; gloo on CPU)",
    )
    parser.add_argument(
        "--max-iterations", type=int, help="stop (with a checkpoint) after this many iterations"
    )
    parser.add_argument(
        "--config", type=Path, action="append", default=[], help="YAML config overlay (repeatable)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def check_inputs(ns: argparse.Namespace):
    """Load the config and refuse unusable sources, outputs and settings before training."""
    from curation.commands.common import check_output_folder
    from curation.config import ConfigError, load_config
    from pretrain.data.shards import ShardFormatError, open_catalog
    from pretrain.train.config import PretrainConfig, PretrainConfigError

    cfg = load_config(PretrainConfig, ns.config, ns.overrides)
    source = ns.shards if ns.shards is not None else ns.images
    if ns.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {ns.nproc_per_node}")
    if ns.out.is_file():
        raise ConfigError(f"--out {ns.out} is a file, not a folder")
    check_output_folder(ns.out, "--out")
    try:
        catalog = open_catalog(source)
        cfg.check(world_size=ns.nproc_per_node, num_sources=len(catalog))
    except (ShardFormatError, PretrainConfigError) as exc:
        raise ConfigError(str(exc)) from exc
    return cfg, str(source)


def run(ns: argparse.Namespace) -> int:
    cfg, source = check_inputs(ns)
    if ns.nproc_per_node > 1:
        return _launch_torchrun(ns, source)
    from pretrain.train.loop import train

    result = train(cfg, source, ns.out, max_iterations=ns.max_iterations)
    summary = {
        "iterations": result.iterations,
        "last_checkpoint": result.last_checkpoint,
        "last_loss": result.losses[-1] if result.losses else None,
    }
    print(json.dumps(summary))
    return 0


def _launch_torchrun(ns: argparse.Namespace, source: str) -> int:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={ns.nproc_per_node}",
        "-m",
        "pretrain.train.loop",
        "--source",
        source,
        "--out",
        str(ns.out),
    ]
    for path in ns.config:
        command += ["--config", str(path)]
    if ns.max_iterations is not None:
        command += ["--max-iterations", str(ns.max_iterations)]
    return subprocess.run([*command, *ns.overrides], check=False).returncode
