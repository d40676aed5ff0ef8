"""``lvd checkpoint consolidate``: one ``torch.save`` file from a sharded training checkpoint
(:func:`pretrain.train.checkpoint.consolidate_checkpoint`), offline, in one process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.cli import group_parser_class


def register(sub) -> None:
    parser = sub.add_parser("checkpoint", help="work on lvd pretrain checkpoints")
    actions = parser.add_subparsers(
        dest="action",
        required=True,
        metavar="ACTION",
        parser_class=group_parser_class("checkpoint"),
    )
    consolidate = actions.add_parser(
        "consolidate",
        help="turn a sharded (DCP) training checkpoint into one torch file",
        description="Read a checkpoint written by lvd pretrain with any number of ranks "
        "(an iter_NNNNNNNN folder, or a run / checkpoints folder: its newest checkpoint) and "
        "write it as one torch.save file: the whole training state (model with heads, "
        "optimizer, iteration, loader position, RNG states), or with --teacher-backbone only "
        "the teacher backbone in the official DINOv2 key layout, which lvd embed and "
        "lvd eval knn load.",
    )
    consolidate.add_argument(
        "checkpoint",
        type=Path,
        metavar="CKPT_DIR",
        help="iter_NNNNNNNN checkpoint folder, or a run or checkpoints folder (newest one)",
    )
    consolidate.add_argument("out", type=Path, metavar="OUT.pth", help="torch file to write")
    consolidate.add_argument(
        "--teacher-backbone",
        action="store_true",
        help="write only the teacher backbone (cls_token, blocks.N.*, norm.*; no heads)",
    )
    consolidate.set_defaults(func=run_consolidate)


def check_output_file(out: Path) -> None:
    from curation.commands.common import check_output_folder
    from curation.config import ConfigError

    if out.is_dir():
        raise ConfigError(f"OUT {out} is a folder; give a file name, e.g. {out}/teacher.pth")
    check_output_folder(out.parent, "folder of OUT")


def run_consolidate(ns: argparse.Namespace) -> int:
    from pretrain.train.checkpoint import consolidate_checkpoint, resolve_checkpoint

    check_output_file(ns.out)
    source = resolve_checkpoint(ns.checkpoint)
    consolidate_checkpoint(source, ns.out, teacher_backbone=ns.teacher_backbone)
    print(json.dumps({"checkpoint": str(source), "out": str(ns.out)}))
    return 0
