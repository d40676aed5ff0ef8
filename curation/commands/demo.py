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

    result = run_demo(load_job_config(ns))
    print(f"demo run finished in {result.seconds:.1f} s: {result.run_dir}")
    shown = (
        *("rows", "status", "micro_ap", "recall_at_p90", "n_true_pairs", "images_per_second"),
        *("kind", "threshold", "pair_", "planted_groups", "stored"),
    )
    flat: dict = {}
    for stage, stats in result.stats.items():
        if not isinstance(stats, dict):
            continue
        nested = {k: v for k, v in stats.items() if isinstance(v, dict) and k.startswith("dedup")}
        flat.update(nested if nested and stage == "dedup" else {stage: stats})
    for stage, stats in flat.items():
        counts = ", ".join(
            f"{k}={round(v, 3) if isinstance(v, float) else v}"
            for k, v in stats.items()
            if k.startswith(shown)
        )
        print(f"  {stage:<14} {counts}")
    return 0
