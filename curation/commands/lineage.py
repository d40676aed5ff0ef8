"""``lvd lineage KEY...``: each sample's URL, download status, sha256, dedup component and its
other members, retrieval provenance and shard."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "lineage",
        help="where samples came from: URL, download, dedup, retrieval, shard",
        description="Reads what every stage of the run recorded about each key (a stage that "
        "did not run is left out) and prints one JSON object per key.",
    )
    parser.add_argument("keys", nargs="*", metavar="KEY", help="sample keys")
    parser.add_argument("--keys-file", type=Path, help="a file of keys, one per line")
    parser.add_argument(
        "--run-dir", type=Path, required=True, help="the run folder (runs_dir/name)"
    )
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation.commands.common import input_folder
    from curation.config import ConfigError
    from curation.jobs.lineage import lineage
    from curation.rundir import RunDir

    keys = list(ns.keys)
    if ns.keys_file:
        if not ns.keys_file.is_file():
            raise FileNotFoundError(f"keys file {ns.keys_file} does not exist")
        keys += [line.strip() for line in ns.keys_file.read_text().splitlines() if line.strip()]
    if not keys:
        raise ConfigError("no keys: give KEY arguments or --keys-file")
    records = lineage(RunDir(input_folder(ns.run_dir, "run folder")), keys)
    for record in records:
        print(json.dumps(record, default=str))
    missing = [r["key"] for r in records if not r["found"]]
    if missing:
        raise ConfigError(f"{len(missing)} key(s) not found in {ns.run_dir}: {missing[:5]}")
    return 0
