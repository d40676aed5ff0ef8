"""``lvd demo``: the whole pipeline on a synthetic web, locally (the embedded default)."""

from __future__ import annotations

import argparse

from curation.commands.common import add_job_arguments, load_job_config


def register(sub) -> None:
    parser = sub.add_parser("demo", help="run the pipeline on a synthetic web, locally")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.jobs.demo import run_demo
    from curation.jobs.demo_summary import summary_lines

    result = run_demo(load_job_config(ns))
    print("\n".join(summary_lines(result.stats, result.run_dir, result.seconds)))
    return 0
