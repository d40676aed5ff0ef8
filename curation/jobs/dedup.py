"""The copy-detection dedup job: SSCD-style embeddings of the pool (and of evaluation sets) in, the
deduplicated, decontaminated pool out.

Writes ``dedup_edges/`` (DEDUP_EDGE: every copy pair above the threshold), ``dedup_copy/``
(DEDUP_COMPONENT: every image, its group, its representative, kept or why not) and
``deduplicated_images/`` (the IMAGE_RECORD rows kept: what retrieval embedding reads). With
``dedup.partitions > 0`` the pair search runs as one task per centroid partition on the engine
(``dedup_partitions/`` holds the partitions, ``dedup_partition_edges/`` their pairs); Spark users
with pools beyond one machine run ``jobs/dedup_spark.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.engines import Engine
from curation.index.knn import edges_table, normalized
from curation.index.partition import (
    assign_nearest,
    dedup_edges,
    partition_members,
    train_coarse_centroids,
)
from curation.io import write_parquet_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.ingest import dedup_summary, unique_image_shards
from curation.readers.embeddings import read_embeddings
from curation.runner import TABLE_OUTPUT, run_stage, run_table_stage
from curation.stages.base import StageSpec
from curation.stages.copy_dedup import (
    CopyDedupConfig,
    PartitionPairsStage,
    PartitionSearchConfig,
    contaminated_rows,
    group_copies,
    self_pairs,
)
from curation.stages.unique_images import UniqueImagesConfig, UniqueImagesStage
from schemas import DEDUP_COMPONENT_SCHEMA, DEDUP_EDGE_SCHEMA, STATUS_OK, embedding_schema

logger = logging.getLogger(__name__)

EXAMPLES = 5  # example pairs per evaluation set in the stats


def pixel_counts(records: list[Path], keys: list[str]) -> pa.Array:
    """width x height of each key's IMAGE_RECORD (null where unknown), in ``keys`` order."""
    if not records:
        return pa.nulls(len(keys), pa.int64())
    table = pq.read_table(records, columns=["key", "width", "height"])
    pixels = pc.multiply(table["width"].cast(pa.int64()), table["height"].cast(pa.int64()))
    index = pc.index_in(pa.array(keys, pa.string()), value_set=table["key"].combine_chunks())
    return pc.take(pixels.combine_chunks(), index)


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
    for cell, rows in partition_members(assign_nearest(x, centroids, config.replicas)):
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


def find_pairs(cfg: CurationConfig, engine: Engine, keys: list[str], vectors: np.ndarray) -> dict:
    """``dedup_edges/``: the pool's copy pairs, in one process or one task per partition."""
    run, config = cfg.run_dir, cfg.dedup
    edges = run.stage("dedup_edges")
    if not config.partitions:
        return run_table_stage(
            "copy_pairs",
            lambda: edges_table(keys, *self_pairs(vectors, config)),
            DEDUP_EDGE_SCHEMA,
            edges,
            config=config,
        )
    if edges.is_complete():
        return edges.read_stats()
    partitions, largest = write_partitions(keys, vectors, config, run.root / "dedup_partitions")
    spec = StageSpec(PartitionPairsStage, PartitionSearchConfig(config, vectors.shape[1], largest))
    found = run.stage("dedup_partition_edges")
    run_stage(spec, partitions, found, engine)
    return run_table_stage(
        "copy_pairs",
        lambda: dedup_edges(pq.read_table(found.outputs())),
        DEDUP_EDGE_SCHEMA,
        edges,
        config=config,
    )


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
    stats = {"dedup_edges": find_pairs(cfg, engine, keys, vectors)}

    def compute() -> pa.Table:
        index = {key: row for row, key in enumerate(keys)}
        edges = pq.read_table(run.stage("dedup_edges").path / TABLE_OUTPUT)
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
        details.update(pairs=edges.num_rows, guard=config.guard, groups=groups)
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
