"""``lvd``: one subcommand per job, each a thin wrapper over a plain function in the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from curation.config import ConfigError, load_config
from curation.engines import ENGINES, EngineUnavailable
from schemas import SchemaError

logger = logging.getLogger("curation")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, action="append", default=[], help="YAML config overlay (repeatable)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. engine.name=ray"
    )


def _load(ns: argparse.Namespace):
    from curation.pipeline import CurationConfig

    overrides = list(ns.overrides)
    if getattr(ns, "engine", None):
        overrides.append(f"engine.name={ns.engine}")
    if getattr(ns, "run", None):
        overrides.append(f"name={ns.run}")
    return load_config(CurationConfig, ns.config, overrides)


def _cmd_synth(ns: argparse.Namespace) -> int:
    from curation.synth.cli import run_synth, synth_config_from_args

    run_synth(ns.out, synth_config_from_args(ns), progress=False if ns.no_progress else None)
    return 0


def _cmd_decode(ns: argparse.Namespace) -> int:
    from curation.pipeline import build_engine, pack_folder, run_decode

    cfg = _load(ns)
    if ns.images:
        inputs = pack_folder(cfg, ns.images)
    else:
        inputs = sorted(Path(ns.input).glob("*.parquet"))
        if not inputs:
            raise FileNotFoundError(f"no .parquet shards in {ns.input}")
    with build_engine(cfg.engine) as engine:
        stats = run_decode(cfg, engine, inputs)
    print(json.dumps(stats, indent=2))
    return 0


def _cmd_demo(ns: argparse.Namespace) -> int:
    from curation.pipeline import run_demo

    cfg = _load(ns)
    result = run_demo(cfg)
    print(f"demo run finished in {result.seconds:.1f} s: {result.run_dir}")
    for stage, stats in result.stats.items():
        counts = ", ".join(f"{k}={v}" for k, v in stats.items() if k.startswith(("rows", "status")))
        print(f"  {stage:<10} {counts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvd", description="Curate LVD-style pretraining data and pretrain DINOv2 on it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the pipeline on a synthetic web, locally")
    demo.add_argument("--engine", choices=sorted(ENGINES), help="engine (default: local)")
    demo.add_argument("--run", help="run name under runs_dir (default: demo)")
    _add_config_arguments(demo)
    demo.set_defaults(func=_cmd_demo)

    synth = sub.add_parser("synth", help="generate a deterministic synthetic web with ground truth")
    from curation.synth.cli import add_synth_arguments

    add_synth_arguments(synth)
    synth.set_defaults(func=_cmd_synth)

    decode = sub.add_parser("decode", help="decode and validate images (status per row)")
    source = decode.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="folder of ENCODED_IMAGE parquet shards")
    source.add_argument("--images", type=Path, help="folder of image files to pack first")
    decode.add_argument("--engine", choices=sorted(ENGINES), help="engine (default: local)")
    decode.add_argument("--run", help="run name under runs_dir")
    _add_config_arguments(decode)
    decode.set_defaults(func=_cmd_decode)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return ns.func(ns)
    except (ConfigError, SchemaError, FileNotFoundError, EngineUnavailable) as exc:
        print(f"lvd {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
