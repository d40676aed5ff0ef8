"""``lvd manifest RUN_DIR [--verify]``: write a run's ``manifest.json``, or re-check its shards
against it."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    parser = sub.add_parser(
        "manifest",
        help="write manifest.json for a run's shards, or --verify them against it",
        description="Writes RUN_DIR/manifest.json (valid against schemas/manifest.schema.json): "
        "the shards with sample counts, sizes and sha256, the composition per seed dataset and "
        "mode, the dedup and decontamination summary, the model ids used and the config hash. "
        "The same run folder always gives the same file. With --verify, re-reads every shard "
        "and prints each mismatch with the manifest on one line; exits 1 on any, 0 when clean.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (a path or a URI)")
    parser.add_argument(
        "--verify", action="store_true", help="re-check checksums, sizes and sample counts"
    )
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation import storage
    from curation.jobs.manifest import MANIFEST, check_run_folder, verify_manifest, write_manifest

    run_dir = check_run_folder(ns.run_dir)
    if not ns.verify:
        manifest = write_manifest(run_dir)
        print(
            f"wrote {storage.join(run_dir, MANIFEST)}: {len(manifest['shards'])} shard(s), {manifest['num_samples']} "
            f"sample(s), {manifest['size_bytes']} bytes"
        )
        return 0
    problems = verify_manifest(run_dir)
    for problem in problems:
        print(f"lvd manifest: verify failed: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{run_dir}: every shard matches manifest.json")
    return 0
