"""``lvd download``: fetch a URL list with img2dataset (resumable), or retry a run's failures."""

from __future__ import annotations

import argparse
import json

from curation.commands.common import add_job_arguments, load_job_config, location
from curation.config import ConfigError, load_config


def register(sub) -> None:
    parser = sub.add_parser(
        "download",
        help="download a URL list with img2dataset (rerun the same command to resume)",
        description="Download images with img2dataset into runs/<name>/download/. Every other "
        "setting is a download.<field>=value override (see curation/download/config.py).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--url-list", type=location, help="parquet/csv/tsv/jsonl(.gz) file or folder (or URI)"
    )
    source.add_argument(
        "--retry-failed", metavar="RUN", help="re-download the failed samples of run RUN"
    )
    parser.add_argument(
        "--allow-private-networks",
        action="store_true",
        help="also fetch from loopback/private/link-local addresses (off by default)",
    )
    parser.add_argument("--output-format", choices=["webdataset", "parquet"])
    parser.add_argument("--processes", type=int, help="download processes (local engine)")
    parser.add_argument("--threads", type=int, help="download threads per process")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def _overrides(ns: argparse.Namespace) -> list[str]:
    flags = {
        "download.url_list": str(ns.url_list) if ns.url_list else None,
        "download.allow_private_networks": "true" if ns.allow_private_networks else None,
        "download.output_format": ns.output_format,
        "download.processes_count": ns.processes,
        "download.thread_count": ns.threads,
    }
    return [f"{key}={value}" for key, value in flags.items() if value is not None]


def run(ns: argparse.Namespace) -> int:
    from curation.engines import build_engine
    from curation.jobs.config import CurationConfig
    from curation.jobs.download import run_download, run_retry_failed

    ns.overrides = list(ns.overrides) + _overrides(ns)
    if ns.retry_failed:
        ns.run = ns.retry_failed
        base = load_job_config(ns)
        stage = base.run_dir.stage("download").path
        # _config.yaml, or config.yaml in a run folder of the older layout
        saved = next(
            (p for p in (stage / "_config.yaml", stage / "config.yaml") if p.is_file()), None
        )
        if saved is None:
            raise ConfigError(
                f"run {ns.retry_failed!r} has no {stage}/_config.yaml; nothing to retry"
            )
        overrides = list(ns.overrides) + [f"name={ns.retry_failed}", f"runs_dir={base.runs_dir}"]
        cfg = load_config(CurationConfig, [saved, *ns.config], overrides)
        with build_engine(cfg.engine) as engine:
            stats = run_retry_failed(cfg, engine)
    else:
        cfg = load_job_config(ns)
        with build_engine(cfg.engine) as engine:
            stats = run_download(cfg, engine)
    print(json.dumps(stats, indent=2))
    return 0
