"""``dedup.verify``: the copy pairs just under the threshold checked with pixels.

A descriptor scores a crop, a framed copy or a picture pasted onto another a little under its
original's score (it sees a different picture); the pixels still line up. With ``dedup.verify=true`` the pair search runs at
``threshold - verify_margin`` and writes ``dedup_candidates/`` (DEDUP_CANDIDATE: each pair's cosine
and score). Pairs over the threshold are copies as before; the others (the band) are checked:
``dedup_check_input/`` holds them with both images' byte locations (PAIR_CHECK, from the records),
:class:`curation.stages.verify_pairs.VerifyPairsStage` runs on the engine, one task per
:data:`CHECK_SHARD_ROWS` pairs, into ``dedup_checked/``, and a band pair is a copy when one image is
a rescaled window of the other (``window_score >= verify_min``). ``dedup_edges/`` then holds every
copy pair, as without the check, and the groups are made from it. An image that cannot be read
leaves its pairs unchecked (not copies), counted in the stats.

The Spark job (:mod:`curation.engines.spark_verify`) does the same with the same stage and the
same float32 comparisons in Spark SQL, so every engine keeps the same set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.engines import Engine
from curation.io import write_parquet_atomic
from curation.jobs.config import CurationConfig
from curation.readers.record_locations import source_locations
from curation.runner import TABLE_OUTPUT, run_stage, run_table_stage
from curation.stages.base import StageSpec
from curation.stages.copy_dedup import EdgeScoring
from curation.stages.verify_pairs import (
    CHECK_SHARD_ROWS,
    UNCHECKED,
    VerifyPairsConfig,
    VerifyPairsStage,
)
from schemas import DEDUP_EDGE_SCHEMA, PAIR_CHECK_SCHEMA

logger = logging.getLogger(__name__)

CROWDED_BAND = 2.0  # band pairs per image in the band above which the check's cost is flagged


def check_rows(band: pa.Table, locations: pa.Table) -> pa.Table:
    """PAIR_CHECK rows of the ``band`` candidates, each image's location taken from ``locations``
    by key (null where the key has no record: the check reports it unreadable)."""
    known = locations.column("key").combine_chunks()
    columns = {
        "src_key": band["src_key"],
        "dst_key": band["dst_key"],
        "similarity": band["similarity"],
        "score": band["score"],
    }
    for side in ("src", "dst"):
        index = pc.index_in(band[f"{side}_key"], value_set=known)
        for name in ("file", "offset", "size"):
            columns[f"{side}_{name}"] = pc.take(locations[f"source_{name}"], index)
    n = band.num_rows
    columns["window_score"] = pa.nulls(n, pa.float32())
    columns["status"] = pa.array([UNCHECKED] * n, pa.string())
    columns["error_message"] = pa.nulls(n, pa.string())
    return pa.table(columns).cast(PAIR_CHECK_SCHEMA)


def write_check_inputs(rows: pa.Table, folder: Path) -> list[Path]:
    """``rows`` in ``folder`` as ``part-NNNNN.parquet`` of :data:`CHECK_SHARD_ROWS` rows each (what
    an earlier run left there is replaced: the rows are the same for the same candidates)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("part-*.parquet"):
        stale.unlink()
    paths = []
    for shard, start in enumerate(range(0, rows.num_rows, CHECK_SHARD_ROWS)):
        path = folder / f"part-{shard:05d}.parquet"
        write_parquet_atomic(path, rows.slice(start, CHECK_SHARD_ROWS), PAIR_CHECK_SCHEMA)
        paths.append(path)
    return paths


def band_of(candidates: pa.Table, threshold: float) -> pa.Table:
    """The candidates at or under ``threshold``: the ones the pixels decide."""
    return candidates.filter(pc.less_equal(candidates["score"], np.float32(threshold)))


def accepted_edges(
    candidates: pa.Table, checked: pa.Table, threshold: float, verify_min: float
) -> pa.Table:
    """DEDUP_EDGE rows: the candidates over ``threshold`` and the checked pairs whose window score
    reaches ``verify_min``, sorted by (src_key, dst_key)."""
    sure = candidates.filter(pc.greater(candidates["score"], np.float32(threshold)))
    matched = pc.fill_null(pc.greater_equal(checked["window_score"], np.float32(verify_min)), False)
    edge_columns = list(DEDUP_EDGE_SCHEMA.names)
    table = pa.concat_tables(
        [
            sure.select(edge_columns).cast(DEDUP_EDGE_SCHEMA),
            checked.filter(matched).select(edge_columns).cast(DEDUP_EDGE_SCHEMA),
        ]
    )
    return table.sort_by([("src_key", "ascending"), ("dst_key", "ascending")])


def check_summary(checked: pa.Table, verify_min: float) -> dict:
    """Counts of a check: pairs checked, copies found, unreadable pairs."""
    scores = checked["window_score"]
    matched = pc.sum(pc.fill_null(pc.greater_equal(scores, np.float32(verify_min)), False))
    return {
        "pairs_checked": checked.num_rows,
        "pairs_verified": int(matched.as_py() or 0),
        "pairs_unreadable": scores.null_count,
    }


def verify_candidates(
    cfg: CurationConfig, engine: Engine, records: list[Path], scoring: EdgeScoring
) -> dict:
    """``dedup_check_input/``, ``dedup_checked/`` and ``dedup_edges/`` from ``dedup_candidates/``
    (module docstring); returns their stats."""
    run, config = cfg.run_dir, cfg.dedup
    candidates = storage.read_table(run.stage("dedup_candidates").path / TABLE_OUTPUT)
    band = band_of(candidates, scoring.threshold)
    checked_dir = run.stage("dedup_checked")
    stats: dict = {}
    if band.num_rows:
        inputs = []
        if not checked_dir.is_complete():
            rows = check_rows(band, source_locations(records))
            inputs = write_check_inputs(rows, run.root / "dedup_check_input")
        logger.info(
            "checking %d candidate pairs with pixels (score in (%g, %g])",
            band.num_rows,
            scoring.threshold - config.verify_margin,
            scoring.threshold,
        )
        pool = max(1, len(set(band["src_key"].to_pylist()) | set(band["dst_key"].to_pylist())))
        if band.num_rows > CROWDED_BAND * pool:
            logger.warning(
                "%d pairs of %d images score just under the threshold (%.1f per image): the "
                "pixel check takes ~50 ms a pair on one core; a narrower dedup.verify_margin or "
                "dedup.verify=false skips most of it",
                band.num_rows,
                pool,
                band.num_rows / pool,
            )
        spec = StageSpec(VerifyPairsStage, VerifyPairsConfig(max_pixels=cfg.embed.max_pixels))
        stats["dedup_checked"] = run_stage(spec, inputs, checked_dir, engine)
        checked = storage.read_table(checked_dir.outputs())
    else:
        checked = PAIR_CHECK_SCHEMA.empty_table()
    counts = check_summary(checked, config.verify_min)
    logger.info("pixel check: %d of %d pairs are copies", counts["pairs_verified"], band.num_rows)

    def accept() -> pa.Table:
        return accepted_edges(candidates, checked, scoring.threshold, config.verify_min)

    stats["dedup_edges"] = run_table_stage(
        "copy_pairs_checked",
        accept,
        DEDUP_EDGE_SCHEMA,
        run.stage("dedup_edges"),
        config=config,
        summarize=lambda table: {
            "rows_out": table.num_rows,
            "scoring": scoring.describe(),
            "candidates": candidates.num_rows,
            **counts,
        },
    )
    return stats
