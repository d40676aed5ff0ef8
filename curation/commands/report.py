"""``lvd report RUN_DIR [--out FILE]``: write a run's ``report.html``."""

from __future__ import annotations

import argparse

from curation.commands.common import check_output_folder, location


def register(sub) -> None:
    parser = sub.add_parser(
        "report",
        help="write report.html: the funnel, dedup and retrieval examples, clusters, training",
        description="Writes one self-contained HTML page (inline styles, SVG charts, embedded "
        "thumbnails; opens offline) from what RUN_DIR holds: the funnel from URLs to shards with "
        "counts and drop reasons, copy-dedup components and the largest ones, decontamination "
        "hits, per-seed retrieval examples, the cluster-size histogram, pretraining loss curves "
        "and k-NN accuracy. A stage that did not run shows as 'not run'.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (a path or a URI)")
    parser.add_argument(
        "--out", type=location, help="where to write the page (default: RUN_DIR/report.html)"
    )
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation import storage
    from curation.config import ConfigError
    from curation.report import check_run_folder, write_report

    out = ns.out
    if out is not None and not storage.is_uri(out):
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; give a file name such as report.html")
        check_output_folder(out.parent, "--out folder")
    run_dir = check_run_folder(ns.run_dir)
    written = write_report(run_dir, None if out is None else str(out))
    print(f"wrote {written}")
    return 0
