"""The copy-detection dedup job: SSCD-style embeddings of the pool (and of evaluation sets) in, the
deduplicated, decontaminated pool out.

Writes ``dedup_edges/`` (DEDUP_EDGE: every copy pair above the threshold), ``dedup_copy/``
(DEDUP_COMPONENT: every image, its group, its representative, kept or why not) and
``deduplicated_images/`` (the IMAGE_RECORD rows kept: what retrieval embedding reads). With
``dedup.partitions > 0`` the pair search runs as one task per centroid partition on the engine
(``dedup_partitions/`` holds the partitions, ``dedup_partition_edges/`` their pairs, and for density
scores also each member's nearest neighbours); Spark users with pools beyond one machine run
``jobs/dedup_spark.py``. With ``dedup.verify`` (the default, when the records say where the images
are) the pairs just under the threshold are checked with pixels first
(:mod:`curation.jobs.dedup_verify`: ``dedup_candidates/``, ``dedup_check_input/``,
``dedup_checked/``); ``dedup_edges/`` then holds the copy pairs of both kinds.

The edge score and threshold (:func:`curation.stages.copy_dedup.resolve_scoring`): the settings,
then the score calibration the embed stage recorded in the embeddings' ``_config.yaml`` (from the
descriptor checkpoint), then the SPEC's cosine 0.6. What was used, and from where, is in the stats
of ``dedup_edges/`` and ``dedup_copy/`` (``scoring``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curation import storage
from curation.config import ConfigError
from curation.engines import Engine
from curation.index.calibration import ScoreCalibration
from curation.index.knn import edges_table, normalized
from curation.index.partition import (
    assign_nearest,
    dedup_edges,
    partition_members,
    score_partition_edges,
    train_coarse_centroids,
)
from curation.io import write_parquet_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.dedup_verify import verify_candidates
from curation.jobs.ingest import dedup_summary, unique_image_shards
from curation.readers.embeddings import read_embeddings
from curation.readers.record_locations import NOT_CHECKED, locate_images
from curation.rundir import CONFIG, LEGACY_CONFIG
from curation.runner import TABLE_OUTPUT, run_stage, run_table_stage
from curation.stages.base import StageSpec
from curation.stages.copy_dedup import (
    CopyDedupConfig,
    EdgeScoring,
    PartitionPairsStage,
    PartitionSearchConfig,
    contaminated_rows,
    group_copies,
    resolve_scoring,
    search_vectors,
    self_edges,
)
from curation.stages.unique_images import UniqueImagesConfig, UniqueImagesStage
from schemas import (
    DEDUP_CANDIDATE_SCHEMA,
    DEDUP_COMPONENT_SCHEMA,
    DEDUP_EDGE_SCHEMA,
    STATUS_OK,
    embedding_schema,
)

logger = logging.getLogger(__name__)

EXAMPLES = 5  # example pairs per evaluation set in the stats


def pixel_counts(records: list[Path], keys: list[str]) -> pa.Array:
    """width x height of each key's IMAGE_RECORD (null where unknown), in ``keys`` order."""
    if not records:
        return pa.nulls(len(keys), pa.int64())
    table = storage.read_table(records, columns=["key", "width", "height"])
    pixels = pc.multiply(table["width"].cast(pa.int64()), table["height"].cast(pa.int64()))
    index = pc.index_in(pa.array(keys, pa.string()), value_set=table["key"].combine_chunks())
    return pc.take(pixels.combine_chunks(), index)


def folder_calibration(folder: str | Path) -> dict | None:
    """The calibration an embed stage recorded in ``folder``'s ``_config.yaml`` (None if none);
    ``folder`` may be a local path or a URI."""
    for name in (CONFIG, LEGACY_CONFIG):
        path = storage.join(folder, name)
        if storage.exists(path):
            saved = yaml.safe_load(storage.read_bytes(path)) or {}
            stage_config = saved.get("config") if isinstance(saved, dict) else None
            if isinstance(stage_config, dict):
                return stage_config.get("calibration") or None
            return None
    return None


def recorded_calibration(embeddings: list[Path]) -> tuple[ScoreCalibration | None, str | None]:
    """The score calibration recorded beside the embedding shards, and the folder it was read
    from; (None, None) when there is none. Folders that disagree are an error."""
    found = {
        folder: folder_calibration(folder)
        for folder in sorted({str(storage.as_path(p).parent) for p in embeddings})
    }
    distinct = {json.dumps(value, sort_keys=True) for value in found.values()}
    if len(distinct) > 1:
        raise ConfigError(
            f"the embedding folders {sorted(map(str, found))} record different score calibrations "
            "(different descriptor checkpoints?): dedup embeddings of one model, or set "
            "dedup.use_calibration=false with dedup.score and dedup.threshold"
        )
    folder, value = next(iter(found.items()))
    if not value:
        return None, None
    return ScoreCalibration.from_dict(value), str(folder)


def write_partitions(
    keys: list[str], vectors: np.ndarray, config: CopyDedupConfig, folder: Path
) -> tuple[list[Path], int]:
    """Each vector in its ``replicas`` nearest of ``partitions`` centroids: one EMBEDDING shard per
    partition (rewritten whole on a rerun: the assignment is seeded); returns the shards and the
    largest partition's size."""
    x = normalized(vectors)
    rng = np.random.default_rng(config.seed)
    sample = x[rng.choice(len(x), size=min(len(x), 100_000), replace=False)]
    centroids = train_coarse_centroids(sample, min(config.partitions, len(x)), seed=config.seed)
    schema = embedding_schema(x.shape[1])
    paths, largest = [], 0
    key_array = pa.array(keys, pa.string())
    for cell, rows in partition_members(
        assign_nearest(x, centroids, min(config.replicas, len(centroids)))
    ):
        flat = pa.array(x[rows].reshape(-1), pa.float32())
        table = pa.table(
            {
                "key": pc.take(key_array, pa.array(rows)),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, x.shape[1]),
                "model_id": pa.array(["partition"] * len(rows), pa.string()),
                "status": pa.array([STATUS_OK] * len(rows), pa.string()),
                "error_message": pa.nulls(len(rows), pa.string()),
            },
            schema=schema,
        )
        path = folder / f"part-{cell:05d}.parquet"
        write_parquet_atomic(path, table, schema)
        paths.append(path)
        largest = max(largest, len(rows))
    return paths, largest


def _density_stats(density: np.ndarray | None) -> dict:
    if density is None or not len(density):
        return {}
    low, mid, high = np.percentile(density, [1, 50, 99]).tolist()
    return {"density": {"p1": round(low, 4), "median": round(mid, 4), "p99": round(high, 4)}}


def find_pairs(
    cfg: CurationConfig,
    engine: Engine,
    keys: list[str],
    vectors: np.ndarray,
    scoring: EdgeScoring,
    candidates: bool = False,
) -> dict:
    """``dedup_edges/``: the pool's copy pairs under ``scoring``, in one process or one task per
    partition. ``vectors``: as searched (:func:`curation.stages.copy_dedup.search_vectors`).
    ``candidates``: ``dedup_candidates/`` instead, DEDUP_CANDIDATE rows (each pair's score beside
    its cosine), for :mod:`curation.jobs.dedup_verify`."""
    run, config = cfg.run_dir, cfg.dedup
    edges = run.stage("dedup_candidates" if candidates else "dedup_edges")
    schema = DEDUP_CANDIDATE_SCHEMA if candidates else DEDUP_EDGE_SCHEMA
    extra: dict = {}

    def summarize(table: pa.Table) -> dict:
        return {"rows_out": table.num_rows, "scoring": scoring.describe(), **extra}

    if not config.partitions:

        def search() -> pa.Table:
            found = self_edges(vectors, config, scoring)
            extra.update(_density_stats(found.density))
            score = found.score if candidates else None
            return edges_table(keys, found.i, found.j, found.similarity, score)

        return run_table_stage(
            "copy_pairs", search, schema, edges, config=config, summarize=summarize
        )
    if edges.is_complete():
        return edges.read_stats()
    partitions, largest = write_partitions(keys, vectors, config, run.root / "dedup_partitions")
    search_config = PartitionSearchConfig(config, vectors.shape[1], largest, scoring)
    found = run.stage("dedup_partition_edges")
    run_stage(StageSpec(PartitionPairsStage, search_config), partitions, found, engine)

    def merge() -> pa.Table:
        merged = dedup_edges(storage.read_table(found.outputs()))
        density = scoring.density()
        if density is None:
            if not candidates:
                return merged
            columns = [*merged.columns, merged["similarity"]]
            return pa.table(columns, schema=DEDUP_CANDIDATE_SCHEMA)
        # The partitions sent candidates and neighbours: score them with merged densities.
        accepted, densities = score_partition_edges(
            keys, merged, scoring.threshold, density, with_score=candidates
        )
        extra.update(_density_stats(densities), partition_rows=merged.num_rows)
        return accepted

    return run_table_stage("copy_pairs", merge, schema, edges, config=config, summarize=summarize)


def run_dedup(
    cfg: CurationConfig,
    engine: Engine,
    embeddings: list[Path] | None = None,
    records: list[Path] | None = None,
    eval_sets: dict[str, list[Path]] | None = None,
) -> dict:
    """Dedup the pool's copy-detection embeddings (default: ``embed_sscd/``) and remove every group
    that touches an evaluation set (``eval_sets``: name -> EMBEDDING shards of the same model);
    ``records`` (default: ``unique_images/``) give pixel counts and become the kept set."""
    run, config = cfg.run_dir, cfg.dedup
    embeddings = run.stage("embed_sscd").outputs() if embeddings is None else embeddings
    records = unique_image_shards(cfg) if records is None else records
    if not embeddings:
        raise FileNotFoundError(f"no embeddings to dedup under {run.root}; run `lvd embed` first")
    run.save_config(cfg)
    keys, vectors = read_embeddings(embeddings)
    scoring = resolve_scoring(config, *recorded_calibration(embeddings))
    searched = search_vectors(vectors, scoring)
    verify = config.verify and locate_images(records)
    if config.verify and not verify:
        logger.warning(NOT_CHECKED)
    if verify:
        lowered = scoring.lowered(config.verify_margin)
        stats = {"dedup_candidates": find_pairs(cfg, engine, keys, searched, lowered, True)}
        stats.update(verify_candidates(cfg, engine, records, scoring))
    else:
        stats = {"dedup_edges": find_pairs(cfg, engine, keys, searched, scoring)}

    def compute() -> pa.Table:
        index = {key: row for row, key in enumerate(keys)}
        edges = storage.read_table(run.stage("dedup_edges").path / TABLE_OUTPUT)
        i = np.array([index[k] for k in edges["src_key"].to_pylist()], dtype=np.int64)
        j = np.array([index[k] for k in edges["dst_key"].to_pylist()], dtype=np.int64)
        contaminated = np.zeros(len(keys), dtype=bool)
        for name, shards in sorted((eval_sets or {}).items()):
            eval_keys, eval_vectors = read_embeddings(shards)
            rows, eval_rows, sim = contaminated_rows(vectors, eval_vectors, config)
            contaminated[rows] = True
            order = np.argsort(-sim)[:EXAMPLES]
            details[f"eval_{name}"] = {
                "eval_images": len(eval_keys),
                "pool_images_matched": int(len(np.unique(rows))),
                "examples": [
                    {"pool": keys[rows[o]], "eval": eval_keys[eval_rows[o]], "sim": float(sim[o])}
                    for o in order
                ],
            }
        table, groups = group_copies(keys, pixel_counts(records, keys), i, j, config, contaminated)
        details.update(
            pairs=edges.num_rows, guard=config.guard, scoring=scoring.describe(), groups=groups
        )
        return table

    details: dict = {}
    stats["dedup_copy"] = run_table_stage(
        "copy_dedup",
        compute,
        DEDUP_COMPONENT_SCHEMA,
        run.stage("dedup_copy"),
        config=config,
        summarize=lambda table: {**dedup_summary(table), **details},
    )
    components = str(run.stage("dedup_copy").path / TABLE_OUTPUT)
    unique = StageSpec(UniqueImagesStage, UniqueImagesConfig((components,)))
    stats["deduplicated_images"] = run_stage(
        unique, records, run.stage("deduplicated_images"), engine
    )
    return stats
