"""Spark job: copy-detection dedup and decontamination of embedding folders.

    spark-submit --master local[*] jobs/dedup_spark.py --embeddings runs/web/embed \\
        --out runs/web/dedup [--records runs/web/ingest] [--eval evals/imagenet_val ...] \\
        [threshold=0.6 score=density k=64 guard=true replicas=3 ...]

Runs on the master spark-submit gives (``local[*]`` or a cluster; executors must share the file
system of ``--out``). ``--embeddings``, ``--records`` (IMAGE_RECORD, for the pixel counts that pick
representatives) and ``--eval`` may be repeated; ``key=value`` overrides set
:class:`~curation.engines.spark_dedup.SparkDedupConfig`. Writes ``edges/``, ``components/``,
``_stats.json`` and ``_SUCCESS`` under ``--out`` and prints the stats as JSON; a finished ``--out``
is not redone. A score calibration recorded beside the embeddings (by ``lvd embed`` with a
calibrated descriptor) applies as in ``lvd dedup``, unless ``score``/``threshold`` say otherwise or
``use_calibration=false``. Set ``spark.checkpoint.dir`` for reliable (not executor-local) checkpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from curation.cli import one_line
from curation.commands.common import check_output_folder, input_folder
from curation.config import load_config
from curation.engines.spark import get_spark_session
from curation.engines.spark_dedup import SparkDedupConfig, run_spark_dedup
from curation.jobs.dedup import recorded_calibration
from curation.jobs.errors import USER_ERRORS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dedup_spark", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--embeddings", type=Path, action="append", required=True, metavar="DIR",
        help="EMBEDDING parquet folder of the pool (repeatable)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--records", type=Path, action="append", default=[], metavar="DIR",
        help="IMAGE_RECORD folder: pixel counts pick representatives (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--eval", dest="evals", type=Path, action="append", default=[], metavar="DIR",
        help="EMBEDDING folder of an evaluation set to decontaminate against (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the traceback, not one line"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="SparkDedupConfig fields")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        config = load_config(SparkDedupConfig, [], ns.overrides)
        # Inputs and output are checked before Spark starts.
        for folder in ns.embeddings:
            input_folder(folder, "embedding folder")
        for folder in ns.records:
            input_folder(folder, "image record folder")
        for folder in ns.evals:
            input_folder(folder, "evaluation folder")
        check_output_folder(ns.out, "output folder")
        # The score calibration the embed stage recorded beside the embeddings, if any.
        shards = [path for folder in ns.embeddings for path in sorted(folder.glob("*.parquet"))]
        calibration, source = recorded_calibration(shards) if shards else (None, None)
        spark = get_spark_session(app_name="lvd-dedup")
        stats = run_spark_dedup(
            spark,
            ns.embeddings,
            ns.out,
            config,
            records=ns.records,
            evals=ns.evals,
            calibration=calibration,
            calibration_source=source,
        )
    except USER_ERRORS as exc:  # the same one-line errors as the lvd CLI
        if ns.debug:
            raise
        print(f"dedup_spark: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
