"""``lvd dedup --engine spark``: the copy-dedup job as the partitioned Spark job
(:mod:`curation.engines.spark_dedup`, what ``spark-submit jobs/dedup_spark.py`` runs) on the
engine's session, writing the run's stage folders as the in-process job (:mod:`curation.jobs.dedup`)
does, so the next stages read them alike:

* ``dedup_edges/``: DEDUP_EDGE parts (``part-NNNNN.parquet``, one per Spark partition, in key
  order), ``_stats.json`` (``rows_out``), ``_SUCCESS``;
* ``dedup_copy/``: DEDUP_COMPONENT parts, ``_stats.json`` with the in-process job's figures
  (rows, kept, ``reason_*``, ``eval_<name>``, pairs, guard, groups) plus the Spark job's (centroids,
  threshold and where it came from), ``_SUCCESS``;
* ``deduplicated_images/``: the kept IMAGE_RECORD rows, by the same shard stage as in-process.

Both dedup folders are written in one Spark job: unless ``dedup_copy/`` is complete, both are redone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from curation.engines.spark import SparkEngine
from curation.engines.spark_dedup import SparkDedupConfig, spark_dedup_frames
from curation.engines.spark_frames import write_folder
from curation.engines.spark_stats import component_stats_of, eval_set_stats, reason_counts
from curation.imaging import DEFAULT_MAX_PIXELS
from curation.io import sweep_temp_files
from curation.jobs.config import CurationConfig
from curation.jobs.dedup import recorded_calibration
from curation.jobs.ingest import unique_image_shards
from curation.rundir import StageDir
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.copy_dedup import CopyDedupConfig
from curation.stages.unique_images import UniqueImagesConfig, UniqueImagesStage
from schemas import DEDUP_COMPONENT_SCHEMA, DEDUP_EDGE_SCHEMA

logger = logging.getLogger(__name__)


def spark_config(config: CopyDedupConfig, max_pixels: int = DEFAULT_MAX_PIXELS) -> SparkDedupConfig:
    """The Spark job's settings from a run's ``dedup`` settings (``partitions`` 0: automatic;
    ``max_pixels``: the decode limit of the pixel check)."""
    return SparkDedupConfig(
        k=config.k,
        score=config.score,
        threshold=config.threshold,
        use_calibration=config.use_calibration,
        eval_threshold=config.eval_threshold,
        guard=config.guard,
        n_centroids=config.partitions or None,
        replicas=config.replicas,
        seed=config.seed,
        verify=config.verify,
        verify_margin=config.verify_margin,
        verify_min=config.verify_min,
        max_pixels=max_pixels,
    )


def _clear_parts(stage: StageDir) -> None:
    """Remove what an unfinished run left in ``stage`` (parts, stats, marker)."""
    if not stage.path.is_dir():
        return
    sweep_temp_files(stage.path)
    for path in stage.path.glob("part-*.parquet"):
        path.unlink()
    for name in ("_stats.json", "_SUCCESS"):
        if (stage.path / name).exists():
            (stage.path / name).unlink()


def run_dedup_spark(
    cfg: CurationConfig,
    engine: SparkEngine,
    embeddings: list[Path] | None = None,
    records: list[Path] | None = None,
    eval_sets: dict[str, list[Path]] | None = None,
) -> dict:
    """:func:`curation.jobs.dedup.run_dedup` on Spark: same arguments, same stage folders and
    score precedence (the calibration recorded with the embeddings applies as in-process), the
    pair search partitioned so that no process holds all the vectors."""
    run = cfg.run_dir
    embeddings = run.stage("embed_sscd").outputs() if embeddings is None else embeddings
    records = unique_image_shards(cfg) if records is None else records
    if not embeddings:
        raise FileNotFoundError(f"no embeddings to dedup under {run.root}; run `lvd embed` first")
    run.save_config(cfg)
    config = spark_config(cfg.dedup, cfg.embed.max_pixels)
    edges_dir, copy_dir = run.stage("dedup_edges"), run.stage("dedup_copy")
    if copy_dir.is_complete() and edges_dir.is_complete():
        logger.info("stage dedup_copy already complete in %s; skipping", copy_dir.path)
        stats = {"dedup_edges": edges_dir.read_stats(), "dedup_copy": copy_dir.read_stats()}
    else:
        calibration = recorded_calibration(embeddings)
        stats = _search_and_group(engine, config, embeddings, records, eval_sets, calibration, cfg)
    unique = StageSpec(UniqueImagesStage, UniqueImagesConfig((str(copy_dir.path),)))
    stats["deduplicated_images"] = run_stage(
        unique, records, run.stage("deduplicated_images"), engine
    )
    return stats


def _search_and_group(engine, config, embeddings, records, eval_sets, calibration, cfg) -> dict:
    """Both dedup folders from one Spark job; ``calibration``: (recorded, where it was read)."""
    run = cfg.run_dir
    edges_dir, copy_dir = run.stage("dedup_edges"), run.stage("dedup_copy")
    for stage in (edges_dir, copy_dir):
        _clear_parts(stage)
        stage.path.mkdir(parents=True, exist_ok=True)
    edges_dir.save_config({"stage": "copy_pairs", "engine": "spark", "config": config})
    copy_dir.save_config({"stage": "copy_dedup", "engine": "spark", "config": config})
    started = time.perf_counter()
    found = spark_dedup_frames(
        engine.spark,
        embeddings,
        config,
        records=records,
        evals=eval_sets or {},
        calibration=calibration[0],
        calibration_source=calibration[1],
    )
    pairs = write_folder(
        found.edges.select("src_key", "dst_key", "similarity").orderBy("src_key", "dst_key"),
        edges_dir.path,
        DEDUP_EDGE_SCHEMA,
    )
    edge_stats = {
        "stage": edges_dir.path.name,
        "rows_out": pairs,
        "scoring": found.scoring.describe(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    edges_dir.write_stats(edge_stats)
    edges_dir.mark_complete()

    write_folder(found.components.orderBy("key"), copy_dir.path, DEDUP_COMPONENT_SCHEMA)
    reasons = reason_counts(found.components)
    per_set = eval_set_stats(found.eval_pairs, list(found.eval_sets))
    copy_stats = {
        "stage": copy_dir.path.name,
        "rows_in": found.images,
        "rows_out": reasons.get("kept", 0),
        **{f"reason_{reason}": count for reason, count in sorted(reasons.items())},
        **{
            f"eval_{name}": {
                "eval_images": found.eval_sets[name],
                "pool_images_matched": figures["pool_images_matched"],
                "examples": [
                    {"pool": e["pool_key"], "eval": e["eval_key"], "sim": e["similarity"]}
                    for e in figures["examples"]
                ],
            }
            for name, figures in sorted(per_set.items())
        },
        "pairs": pairs,
        "guard": config.guard,
        "scoring": found.scoring.describe(),
        "groups": component_stats_of(found.components),
        "engine": "spark",
        "centroids": found.centroids,
        "seconds": round(time.perf_counter() - started, 3),
    }
    copy_dir.write_stats(copy_stats)
    copy_dir.mark_complete()
    return {"dedup_edges": edge_stats, "dedup_copy": copy_stats}
