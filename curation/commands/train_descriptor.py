"""``lvd train-descriptor``: train a copy-detection descriptor (SSCD recipe) on unlabeled images."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from curation.commands.common import parse_sizes
from curation.train_descriptor.presets import PRESET_CHOICES


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
        type=parse_sizes,
        default=(),
        help="comma-separated sizes for multi-scale evaluation, e.g. 128,160,224",
    )
    parser.add_argument(
        "--preset",
        default="auto",
        choices=PRESET_CHOICES,
        help="a named recipe under the config files and overrides: cpu-15min (a 15-minute CPU "
        "run), gpu (15 minutes on one GPU), none (the plain defaults); auto (default): gpu when "
        "CUDA is available, else cpu-15min",
    )
    parser.add_argument(
        "--config", type=Path, action="append", default=[], help="YAML config overlay (repeatable)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def check_inputs(ns: argparse.Namespace):
    """Refuse missing, empty or unreadable sources and an unwritable ``--out`` before training
    (each problem one line, not a traceback at the end of a training run); returns the opened
    ``--eval-synth`` web, or None."""
    from curation.commands.common import check_output_folder, parquet_files, tar_files
    from curation.config import ConfigError
    from curation.readers.image_files import list_image_files
    from curation.readers.input_shards import IMAGE_INPUT_SCHEMAS, check_input_shards
    from curation.synth import SynthWeb

    if ns.images is not None and not list_image_files(ns.images):
        raise FileNotFoundError(f"no image files under {ns.images}")
    if ns.shards is not None:
        check_input_shards(parquet_files(ns.shards), tuple(IMAGE_INPUT_SCHEMAS))
    if ns.tars is not None:
        tar_files(ns.tars)
    if ns.out.is_dir():
        raise ConfigError(f"--out {ns.out} is a folder; give a checkpoint file, e.g. {ns.out}/d.pt")
    check_output_folder(ns.out.parent, "--out folder")
    return SynthWeb.load(ns.eval_synth) if ns.eval_synth is not None else None


def run(ns: argparse.Namespace) -> int:
    import torch

    from curation.config import ConfigError, load_config
    from curation.models.descriptor import descriptor_archs
    from curation.train_descriptor import DescriptorTrainConfig, train_descriptor
    from curation.train_descriptor.data import collect_loaders
    from curation.train_descriptor.evaluate import evaluate_on_synthetic_web
    from curation.train_descriptor.presets import resolve_preset

    preset, base = resolve_preset(ns.preset, torch.cuda.is_available())
    cfg = load_config(DescriptorTrainConfig, ns.config, ns.overrides, base=base)
    if cfg.arch not in descriptor_archs():
        raise ConfigError(
            f"arch {cfg.arch!r} is not a descriptor; choose one of {descriptor_archs()}"
        )
    eval_web = check_inputs(ns)
    out = Path(ns.out)
    loaders = collect_loaders(
        images=ns.images, shards=ns.shards, tars=ns.tars, index_dir=out.parent / f"{out.stem}_index"
    )
    init = out.with_name(f"{out.stem}.init.pt") if ns.baseline else None
    logging.getLogger(__name__).info("preset %s", preset)  # after every input check
    result = train_descriptor(cfg, [loader for _, loader in loaders], out, init_checkpoint=init)
    summary: dict = {
        "checkpoint": str(result.checkpoint),
        "preset": preset,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "autocast": result.autocast,
        "images": len(loaders),
    }
    if eval_web is not None:
        scales = ns.eval_scales
        models = {"trained": result.checkpoint, **({"untrained": init} if init else {})}
        for name, path in models.items():
            report = evaluate_on_synthetic_web(path, eval_web, device=cfg.device)
            summary[f"{name}_single_scale"] = asdict(report)
            if scales:
                report = evaluate_on_synthetic_web(path, eval_web, scales=scales, device=cfg.device)
                summary[f"{name}_multi_scale"] = asdict(report)
    print(json.dumps(summary, indent=2))
    return 0
