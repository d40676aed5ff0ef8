"""``lvd synth``: generate a deterministic synthetic web with ground truth."""

from __future__ import annotations

import argparse

from curation.synth.cli import add_synth_arguments, run_synth, synth_config_from_args


def register(sub) -> None:
    parser = sub.add_parser(
        "synth", help="generate a deterministic synthetic web with ground truth"
    )
    add_synth_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    run_synth(ns.out, synth_config_from_args(ns), progress=False if ns.no_progress else None)
    return 0
