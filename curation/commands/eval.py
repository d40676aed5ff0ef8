"""``lvd eval knn``: weighted k-NN (k = 20, T = 0.07) top-1 / top-5 of a frozen embedder (our
exported teacher, an official DINOv2 backbone, any model ``lvd embed`` loads) on a labelled split
given as class folders or labelled Parquet (:mod:`pretrain.eval`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curation.cli import group_parser_class

DEFAULT_MODEL = "dinov2_vits14"


def register(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate a frozen backbone on labelled images")
    evaluations = parser.add_subparsers(
        dest="evaluation",
        required=True,
        metavar="EVALUATION",
        parser_class=group_parser_class("eval"),
    )
    knn = evaluations.add_parser(
        "knn",
        help="weighted k-NN top-1 / top-5 on frozen features",
        description="Embed a labelled train and val split with a frozen model (as lvd embed "
        "does: L2-normalised CLS token for a ViT) and score the weighted k-NN classifier "
        "(DINOv2's evaluation). A split is a folder of class folders (DIR/<class>/*.jpg) or a "
        "Parquet file (or folder of them) with label and image (bytes) or path columns.",
    )
    knn.add_argument("--train", type=Path, required=True, help="labelled training split")
    knn.add_argument("--val", type=Path, required=True, help="labelled validation split")
    knn.add_argument(
        "--checkpoint",
        type=Path,
        help="model weights: an exported teacher backbone (lvd pretrain), an official DINOv2 "
        "state dict, or any checkpoint lvd embed loads",
    )
    knn.add_argument(
        "--model",
        help=f"model name as in embed.model (default {DEFAULT_MODEL}; the ViT arch of a "
        "backbone checkpoint); without --checkpoint: random seeded weights, a baseline",
    )
    knn.add_argument("--k", type=int, default=20, help="neighbours per query (default 20)")
    knn.add_argument(
        "--temperature", type=float, default=0.07, help="vote weights exp(sim / T) (default 0.07)"
    )
    knn.add_argument("--size", type=int, help="input size (default: the model's own recipe)")
    knn.add_argument("--linear-probe", action="store_true", help="also fit a linear probe")
    knn.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    knn.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    knn.add_argument("--num-workers", type=int, default=2, help="decode workers")
    knn.add_argument("--json", type=Path, help="also write the report as JSON here")
    knn.set_defaults(func=run_knn_command)


def _check_settings(ns: argparse.Namespace) -> None:
    from curation.commands.common import check_output_folder
    from curation.config import ConfigError

    for flag, path in (("--train", ns.train), ("--val", ns.val)):
        if not path.exists():  # both checked before either split is read
            raise FileNotFoundError(f"{flag} {path} does not exist")
    if ns.checkpoint is None and ns.model is None:
        raise ConfigError(
            "give --checkpoint (and --model for its arch) or --model (random weights)"
        )
    if ns.checkpoint is not None and not ns.checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {ns.checkpoint} does not exist")
    if ns.k < 1:
        raise ConfigError(f"--k must be >= 1, got {ns.k}")
    if not ns.temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {ns.temperature}")
    if ns.size is not None and ns.size < 1:
        raise ConfigError(f"--size must be >= 1, got {ns.size}")
    if ns.batch_size < 1 or ns.num_workers < 0:
        raise ConfigError("--batch-size must be >= 1 and --num-workers >= 0")
    if ns.json is not None:
        if ns.json.is_dir():
            raise ConfigError(f"--json {ns.json} is a folder; give a file name")
        check_output_folder(ns.json.parent, "--json")


def run_knn_command(ns: argparse.Namespace) -> int:
    from curation.config import ConfigError
    from curation.models.embedder import load_embedder
    from curation.models.inference import BatchEmbedder, InferenceOptions
    from pretrain.eval.frozen_features import check_classes, evaluate_splits
    from pretrain.eval.labelled import read_labelled_split

    _check_settings(ns)
    train = read_labelled_split(ns.train, "--train")
    val = read_labelled_split(ns.val, "--val")
    classes = check_classes(train, val)
    if ns.linear_probe and len(classes) < 2:
        raise ConfigError(f"--linear-probe needs at least 2 classes; --train {ns.train} has 1")
    embedder = load_embedder(ns.model or DEFAULT_MODEL, ns.checkpoint, size=ns.size)
    options = InferenceOptions(
        device=ns.device, batch_size=ns.batch_size, num_workers=ns.num_workers
    )
    batch_embedder = BatchEmbedder(embedder, options)
    try:
        report = evaluate_splits(
            train,
            val,
            batch_embedder,
            k=ns.k,
            temperature=ns.temperature,
            with_linear_probe=ns.linear_probe,
        )
    finally:
        batch_embedder.close()
    report["train"], report["val"] = str(ns.train), str(ns.val)
    line = (
        f"k-NN (k={ns.k}, T={ns.temperature:g}) of {report['model_id']}: "
        f"top-1 {100 * report['knn_top1']:.2f}%  top-5 {100 * report['knn_top5']:.2f}%  "
        f"({report['train_images']} train / {report['val_images']} val images, "
        f"{report['classes']} classes"
    )
    if report["failed_images"]:
        line += f", {report['failed_images']} unreadable left out"
    line += ")"
    if "linear_top1" in report:
        line += f"  linear probe top-1 {100 * report['linear_top1']:.2f}%"
    print(line)
    if ns.json is not None:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
