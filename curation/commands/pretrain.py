"""``lvd pretrain``: DINOv2 pretraining on LVD shards or a plain folder of unlabeled images."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "pretrain",
        help="pretrain a DINOv2 ViT on curated shards or a folder of unlabeled images",
        description="Training settings are config keys, e.g. backbone.arch=vit_small "
        "batch_size_per_rank=32 optim.epochs=10 crops.global_crops_size=224 "
        "(see pretrain/train/config.py, PretrainConfig). Rerunning with the same --out "
        "resumes from its newest checkpoint at the exact next sample. A final "
        "high-resolution phase: high_res.iterations=N high_res.global_crops_size=518 "
        "(pretrain/train/high_res.py).",
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
        "--distill-from",
        type=Path,
        metavar="CKPT",
        help="distill the configured (smaller) student from this frozen teacher: an lvd "
        "pretrain checkpoint with its heads (iter_NNNNNNNN folder, run folder, or a file of "
        "`lvd checkpoint consolidate` without --teacher-backbone); the student's "
        "loss.dino_head.out_dim must be the teacher's. Give it again to resume",
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
    from pretrain.train.checkpoint import latest_checkpoint
    from pretrain.train.config import DistillConfig, PretrainConfig, PretrainConfigError
    from pretrain.train.distill import (
        check_resume,
        check_teacher_fits,
        describe_teacher,
        distillation_config,
    )
    from pretrain.train.loop import CHECKPOINT_FOLDER

    cfg = load_config(PretrainConfig, ns.config, ns.overrides)
    if ns.distill_from is not None:
        cfg = replace(cfg, distill=DistillConfig(str(ns.distill_from)))
    source = ns.shards if ns.shards is not None else ns.images
    if ns.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {ns.nproc_per_node}")
    if ns.out.is_file():
        raise ConfigError(f"--out {ns.out} is a file, not a folder")
    check_output_folder(ns.out, "--out")
    try:
        catalog = open_catalog(source)
        cfg.check(world_size=ns.nproc_per_node, num_sources=len(catalog))
        if cfg.distill.teacher_checkpoint:
            teacher = describe_teacher(cfg.distill.teacher_checkpoint)  # before any log line
            cfg = distillation_config(cfg)
            check_teacher_fits(cfg, teacher)
        resume_from = latest_checkpoint(ns.out / CHECKPOINT_FOLDER)
        if resume_from is not None:
            check_resume(resume_from, cfg)
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
    if ns.distill_from is not None:
        command += ["--distill-from", str(ns.distill_from)]
    if ns.max_iterations is not None:
        command += ["--max-iterations", str(ns.max_iterations)]
    return subprocess.run([*command, *ns.overrides], check=False).returncode
