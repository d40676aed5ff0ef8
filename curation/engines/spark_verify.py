"""``verify`` in the Spark dedup job: the pairs just under the threshold checked with pixels, as
the in-process job does (:mod:`curation.jobs.dedup_verify`).

The search runs ``verify_margin`` under the threshold and each pair carries its score; pairs over
the threshold are copies, the others (the band) are joined with both images' byte locations (read
from the IMAGE_RECORD files by the executors, ``source_file`` resolved against each file's run) and
checked by :class:`curation.stages.verify_pairs.VerifyPairsStage` inside ``mapInArrow``, a task per
:data:`curation.stages.verify_pairs.CHECK_SHARD_ROWS` pairs; a band pair is a copy when its window
score reaches ``verify_min``. The same stage and the same float32 comparisons as in-process, so
both keep the same set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from curation.engines.spark import to_spark_schema
from curation.engines.spark_frames import cut_lineage, functions
from curation.readers.record_locations import LOCATION_SCHEMA, record_files, source_locations
from curation.stages.verify_pairs import (
    CHECK_SHARD_ROWS,
    UNCHECKED,
    VerifyPairsConfig,
    VerifyPairsStage,
)
from schemas import PAIR_CHECK_SCHEMA


def location_frame(spark, records: Sequence[Path]):
    """DataFrame ``(key, source_file, source_offset, source_size)`` of every record, each file
    read by an executor."""
    files = record_files(records)
    if not files:
        raise FileNotFoundError("dedup verify reads the images' bytes: give the image records")
    paths = spark.createDataFrame([(f,) for f in files], "path string")
    paths = paths.repartition(max(1, min(len(files), spark.sparkContext.defaultParallelism)))

    def read(batches):
        for batch in batches:
            for path in batch.column("path").to_pylist():
                yield from source_locations([Path(path)]).to_batches()

    return paths.mapInArrow(read, to_spark_schema(LOCATION_SCHEMA))


def _check_rows(band, locations):
    """PAIR_CHECK rows of the band pairs (locations joined by key, null where unknown)."""
    F = functions()
    sides = []
    for side in ("src", "dst"):
        sides.append(
            locations.select(
                F.col("key").alias(f"{side}_key"),
                *(F.col(f"source_{n}").alias(f"{side}_{n}") for n in ("file", "offset", "size")),
            )
        )
    rows = band.join(sides[0], "src_key", "left").join(sides[1], "dst_key", "left")
    rows = rows.withColumn("window_score", F.lit(None).cast("float"))
    rows = rows.withColumn("status", F.lit(UNCHECKED))
    rows = rows.withColumn("error_message", F.lit(None).cast("string"))
    return rows.select(*PAIR_CHECK_SCHEMA.names)


def checked_edges(
    candidates, records: Sequence[Path], threshold: float, verify_min: float, max_pixels: int
):
    """``(edges, checked)``: the copy pairs (``src_key``, ``dst_key``, ``similarity``) of
    ``candidates`` (those columns and ``score``): the ones over ``threshold`` and the checked ones
    whose window score reaches ``verify_min``; and the checked pairs (PAIR_CHECK, materialised)."""
    F = functions()
    spark = candidates.sparkSession
    limit = F.lit(threshold).cast("float")
    sure = candidates.where(F.col("score") > limit).select("src_key", "dst_key", "similarity")
    band = cut_lineage(candidates.where(F.col("score") <= limit))
    n_band = band.count()
    rows = _check_rows(band, location_frame(spark, records))
    rows = rows.repartition(max(1, math.ceil(n_band / CHECK_SHARD_ROWS)))
    config = VerifyPairsConfig(max_pixels=max_pixels)

    def check(batches):
        stage = VerifyPairsStage(config)
        stage.setup()
        for batch in batches:
            table = pa.Table.from_batches([batch])
            if table.num_rows:
                yield from stage(table.cast(PAIR_CHECK_SCHEMA)).to_batches()

    checked = cut_lineage(rows.mapInArrow(check, to_spark_schema(PAIR_CHECK_SCHEMA)))
    matched = checked.where(F.col("window_score") >= F.lit(verify_min).cast("float"))
    edges = sure.unionByName(matched.select("src_key", "dst_key", "similarity"))
    return edges, checked


def check_counts(checked, verify_min: float) -> dict:
    """The stats of a check, as :func:`curation.jobs.dedup_verify.check_summary`."""
    F = functions()
    row = checked.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum((F.col("window_score") >= F.lit(verify_min).cast("float")).cast("long")).alias("v"),
        F.sum(F.col("window_score").isNull().cast("long")).alias("u"),
    ).collect()[0]
    return {
        "pairs_checked": int(row["n"]),
        "pairs_verified": int(row["v"] or 0),
        "pairs_unreadable": int(row["u"] or 0),
    }
