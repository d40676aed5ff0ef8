"""``lvd synth``: generate a deterministic synthetic web with ground truth."""

from __future__ import annotations

import argparse

from curation.commands.common import check_output_folder
from curation.config import ConfigError
from curation.synth.cli import add_synth_arguments, run_synth, synth_config_from_args


def register(sub) -> None:
    parser = sub.add_parser(
        "synth", help="generate a deterministic synthetic web with ground truth"
    )
    add_synth_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    try:
        cfg = synth_config_from_args(ns)
    except ValueError as exc:  # SynthConfig's own checks on the numbers given
        raise ConfigError(str(exc)) from exc
    check_output_folder(ns.out, "--out")
    run_synth(ns.out, cfg, progress=False if ns.no_progress else None)
    return 0
