"""``lvd train-descriptor``: train a copy-detection descriptor (SSCD recipe) on unlabeled images."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "train-descriptor",
        help="train a copy-detection descriptor on unlabeled images (SSCD recipe)",
        description="Training settings are config keys, e.g. arch=resnet18 width=32 "
        "augment.size=96 batch_size=128 time_budget_s=300 entropy_weight=3 device=cuda "
        "(see curation/train_descriptor/train.py, DescriptorTrainConfig).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of image files")
    source.add_argument("--shards", type=Path, help="folder of ENCODED_IMAGE / IMAGE_RECORD shards")
    source.add_argument("--tars", type=Path, help="folder of webdataset .tar shards")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also save the untrained network (same init) beside --out, as <out>.init.pt",
    )
    parser.add_argument(
        "--eval-synth",
        type=Path,
        help="a synthetic web (lvd synth): report micro-AP of its planted copies afterwards",
    )
    parser.add_argument(
        "--eval-scales",
        default="",
        help="comma-separated sizes for multi-scale evaluation, e.g. 128,160,224",
    )
    parser.add_argument(
        "--config", type=Path, action="append", default=[], help="YAML config overlay (repeatable)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.config import load_config
    from curation.train_descriptor import DescriptorTrainConfig, train_descriptor
    from curation.train_descriptor.data import collect_loaders
    from curation.train_descriptor.evaluate import evaluate_on_synthetic_web

    cfg = load_config(DescriptorTrainConfig, ns.config, ns.overrides)
    out = Path(ns.out)
    loaders = collect_loaders(
        images=ns.images, shards=ns.shards, tars=ns.tars, index_dir=out.parent / f"{out.stem}_index"
    )
    init = out.with_name(f"{out.stem}.init.pt") if ns.baseline else None
    result = train_descriptor(cfg, [loader for _, loader in loaders], out, init_checkpoint=init)
    summary: dict = {
        "checkpoint": str(result.checkpoint),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "autocast": result.autocast,
        "images": len(loaders),
    }
    if ns.eval_synth:
        scales = tuple(int(s) for s in ns.eval_scales.split(",") if s.strip())
        models = {"trained": result.checkpoint, **({"untrained": init} if init else {})}
        for name, path in models.items():
            report = evaluate_on_synthetic_web(path, ns.eval_synth, device=cfg.device)
            summary[f"{name}_single_scale"] = asdict(report)
            if scales:
                report = evaluate_on_synthetic_web(
                    path, ns.eval_synth, scales=scales, device=cfg.device
                )
                summary[f"{name}_multi_scale"] = asdict(report)
    print(json.dumps(summary, indent=2))
    return 0
