"""The retrieval job: the kept pool's retrieval embeddings and the seed datasets in, the curated
selection out (:mod:`curation.stages.retrieve` says what each mode does).

Reads ``<run>/<retrieve.pool>/`` (default ``embed_retrieval/``: ``lvd embed`` with a ViT on
``deduplicated_images/``), the kept set ``deduplicated_images/`` (else ``unique_images/``), and for
cluster mode ``clusters/`` + ``cluster_centroids/`` (``lvd cluster``). Seed images given as a folder
are packed into ``seed_<name>/`` and embedded with ``cfg.embed`` into ``embed_seed_<name>/``.
Writes ``retrieval_candidates/`` (sample mode: one task per pool shard), ``retrieval/``
(RETRIEVAL_SELECTION: every (image, seed row) selected, with provenance) and ``retrieved_images/``
(SHARD_SOURCE: each selected image once, where its bytes are, its first provenance): what
``lvd shards`` writes.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from curation import storage
from curation.config import ConfigError
from curation.engines import Engine
from curation.jobs.config import CurationConfig
from curation.readers.embeddings import read_embeddings
from curation.readers.image_bytes import lineage_schema
from curation.runner import TABLE_OUTPUT, run_stage, run_table_stage
from curation.stages.base import StageSpec
from curation.stages.cluster import CENTROIDS, load_centroids
from curation.stages.retrieve import (
    SeedDataset,
    SeedSearchConfig,
    SeedSearchStage,
    apply_quota,
    as_is_key,
    cluster_selection,
    first_provenance,
    merge_sample_candidates,
    selection_rows,
)
from schemas import (
    RETRIEVAL_SELECTION_SCHEMA,
    SHARD_SOURCE_SCHEMA,
    STATUS_OK,
)

logger = logging.getLogger(__name__)


def kept_records(cfg: CurationConfig) -> list:
    """IMAGE_RECORD shards of the kept pool: after copy dedup if it ran, else after hash dedup."""
    run = cfg.run_dir
    kept = run.stage("deduplicated_images")
    if kept.is_complete():
        return kept.outputs()
    return run.stage("unique_images").outputs()


def model_ids(paths: list) -> set[str]:
    """The ``model_id`` values of EMBEDDING shards (read from each shard's first rows)."""
    found: set[str] = set()
    for path in paths:
        table = storage.read_table(path, columns=["model_id"])
        found.update(pc.unique(table.column("model_id")).to_pylist())
    return found


def seed_image_shards(cfg: CurationConfig, seed: SeedDataset) -> list[Path]:
    """The seed folder packed into ENCODED_IMAGE shards under ``<run>/seed_<name>/``."""
    from curation.jobs.decode import pack_folder

    folder = Path(seed.images)
    if not folder.is_dir():
        raise FileNotFoundError(f"seed dataset {seed.name}: image folder {folder} does not exist")
    return pack_folder(cfg, folder, into=f"seed_{seed.name}")


def seed_embeddings(cfg: CurationConfig, engine: Engine, seed: SeedDataset) -> list:
    """EMBEDDING shards of a seed dataset: the folder it names, or its images embedded now."""
    if seed.embeddings:
        shards = storage.list_files(seed.embeddings, "*.parquet")
        shards = [p for p in shards if not storage.as_path(p).name.startswith("_")]
        if not shards:
            raise FileNotFoundError(
                f"seed dataset {seed.name}: no EMBEDDING shards in {seed.embeddings}"
            )
        return shards
    from curation.jobs.embed import run_embed

    stage = f"embed_seed_{seed.name}"
    run_embed(cfg, engine, seed_image_shards(cfg, seed), stage=stage)
    return cfg.run_dir.stage(stage).outputs()


def check_same_model(pool: list, seeds: dict[str, list]) -> None:
    """A :class:`ConfigError` unless the pool and every seed set were embedded by one model."""
    expected = model_ids(pool)
    for name, shards in seeds.items():
        found = model_ids(shards)
        if found and expected and found != expected:  # an empty side has nothing to compare
            raise ConfigError(
                f"seed dataset {name} was embedded with {sorted(found)} but the pool with "
                f"{sorted(expected)}: embed both with the same retrieval model"
            )


def sample_candidates(
    cfg: CurationConfig, engine: Engine, pool: list, seeds: dict[str, list], prefix: str = ""
) -> pa.Table:
    """Every sample-mode seed image's nearest pool images, per pool shard (one task each)."""
    config = cfg.retrieve
    sampled = [s for s in config.seeds if s.mode == "sample"]
    if not sampled:
        return RETRIEVAL_SELECTION_SCHEMA.empty_table()
    dim = storage.read_schema(pool[0]).field("embedding").type.list_size
    search = SeedSearchConfig(
        dim=dim,
        seeds=tuple((s.name, s.n, tuple(map(str, seeds[s.name]))) for s in sampled),
        index=config.index,
        nprobe=config.nprobe,
        rows_per_call=config.rows_per_call,
    )
    stage = cfg.run_dir.stage(f"{prefix}retrieval_candidates")
    run_stage(StageSpec(SeedSearchStage, search), pool, stage, engine)
    return storage.read_table(stage.outputs()).cast(RETRIEVAL_SELECTION_SCHEMA)


def cluster_rows(cfg: CurationConfig, seed: SeedDataset, shards: list) -> pa.Table:
    """Cluster mode for one seed dataset: its images' clusters, then pool images from each."""
    from curation.index.kmeans import assign

    run = cfg.run_dir
    clusters = run.stage("clusters")
    if not clusters.is_complete():
        raise FileNotFoundError(
            f"seed dataset {seed.name} uses cluster mode: run `lvd cluster` first "
            f"(no complete clusters/ under {run.root})"
        )
    centroids = load_centroids(storage.join(run.stage("cluster_centroids").path, CENTROIDS))
    _, vectors = read_embeddings(shards)
    seed_clusters, _ = assign(vectors, centroids)
    table = storage.read_table(clusters.outputs(), columns=["key", "cluster_id"])
    return cluster_selection(
        seed.name,
        seed_clusters,
        table.column("key").to_numpy(zero_copy_only=False),
        table.column("cluster_id").to_numpy(),
        seed.m,
        seed.min_seeds,
        cfg.retrieve.seed,
    )


def balanced_rows(cfg: CurationConfig, seed: SeedDataset, pool: list) -> pa.Table:
    """Balanced mode: ``size`` pool images drawn down the hierarchical k-means tree."""
    from curation.index.kmeans import (
        HierarchicalKMeansConfig,
        balanced_sample,
        hierarchical_kmeans,
        scaled_levels,
    )

    keys, vectors = read_embeddings(pool)
    if seed.size > len(keys):
        raise ConfigError(
            f"seed dataset {seed.name}: size {seed.size} exceeds the pool's {len(keys)}"
        )
    hierarchy = HierarchicalKMeansConfig(
        levels=scaled_levels(len(keys), cfg.cluster.levels),
        resampling_steps=cfg.cluster.resampling_steps,
        niter=cfg.cluster.niter,
        seed=cfg.cluster.seed,
    )
    rows = balanced_sample(hierarchical_kmeans(vectors, hierarchy), seed.size, cfg.retrieve.seed)
    return selection_rows(
        [keys[r] for r in rows], seed.name, "balanced", rank=np.arange(1, len(rows) + 1)
    )


def as_is_rows(cfg: CurationConfig, seed: SeedDataset) -> tuple[pa.Table, pa.Table]:
    """As-is mode: the seed images themselves, as (selection rows, SHARD_SOURCE rows)."""
    encoded = storage.read_table(seed_image_shards(cfg, seed))
    keys, sources = [], []
    for row in encoded.to_pylist():
        data = row["image"]
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
            status, error = STATUS_OK, None
        except Exception as exc:  # noqa: BLE001 - an unreadable seed image is a row status
            width = height = None
            status, error = "decode_error", f"{type(exc).__name__}: {exc}"
        key = as_is_key(seed.name, row["key"])
        keys.append(row["key"])
        sources.append(
            {
                "key": key,
                "url": row["url"],
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": width,
                "height": height,
                "status": status,
                "error_message": error,
                "source_file": row["source_file"],
                "source_offset": row["source_offset"],
                "source_size": row["source_size"],
                "image": data,
                "seed_dataset": seed.name,
                "mode": "as_is",
                "seed_key": row["key"],
            }
        )
    table = pa.Table.from_pylist(sources, schema=SHARD_SOURCE_SCHEMA)
    ok = pc.equal(table.column("status"), STATUS_OK)
    selected = table.filter(ok)
    rows = selection_rows(
        selected.column("key"), seed.name, "as_is", seed_keys=selected.column("seed_key")
    )
    return rows, table


def pool_sources(records: list, provenance: pa.Table) -> pa.Table:
    """SHARD_SOURCE rows of the selected pool images: their records plus their provenance."""
    wanted = provenance.column("key")
    table = storage.read_table(records)
    table = table.filter(pc.is_in(table.column("key"), value_set=wanted))
    order = pc.index_in(table.column("key"), value_set=wanted)
    columns = {name: table.column(name) for name in table.column_names if name != "image"}
    columns["image"] = pa.nulls(table.num_rows, pa.binary())
    for name in ("seed_dataset", "mode", "seed_key", "rank", "similarity", "cluster_id"):
        columns[name] = pc.take(provenance.column(name), order)
    return pa.table(columns).select(SHARD_SOURCE_SCHEMA.names).cast(SHARD_SOURCE_SCHEMA)


def run_retrieve(cfg: CurationConfig, engine: Engine, prefix: str = "") -> dict:
    """Select pool images for every seed dataset of ``cfg.retrieve``; see the module docstring.
    ``prefix``: of the output stages' names (a second retrieval in the same run, with another
    embedder: ``teacher_retrieval/`` ...)."""
    run, config = cfg.run_dir, cfg.retrieve
    if not config.seeds:
        raise ConfigError("retrieve.seeds is empty: list the seed datasets (see examples/)")
    pool = run.stage(config.pool).outputs()
    if not pool:
        raise FileNotFoundError(
            f"no pool embeddings in {run.root}/{config.pool}: run `lvd embed` with a retrieval "
            "model on deduplicated_images/ first"
        )
    records = kept_records(cfg)
    if not records:
        raise FileNotFoundError(f"no kept pool records under {run.root}: run ingest and dedup")
    run.save_config(cfg)
    needs_vectors = [s for s in config.seeds if s.mode in ("sample", "cluster")]
    seeds = {s.name: seed_embeddings(cfg, engine, s) for s in needs_vectors}
    check_same_model(pool, seeds)
    candidates = sample_candidates(cfg, engine, pool, seeds, prefix)
    details: dict = {}

    def select() -> pa.Table:
        kept = storage.read_table(records, columns=["key", "status"])
        kept_keys = kept.filter(pc.equal(kept.column("status"), STATUS_OK)).column("key")
        parts = []
        for seed in config.seeds:
            if seed.mode == "as_is":
                rows, _ = as_is_rows(cfg, seed)
            elif seed.mode == "sample":
                mine = candidates.filter(pc.equal(candidates.column("seed_dataset"), seed.name))
                rows = merge_sample_candidates(mine, {seed.name: seed.n})
            elif seed.mode == "cluster":
                rows = cluster_rows(cfg, seed, seeds[seed.name])
            else:
                rows = balanced_rows(cfg, seed, pool)
            if seed.mode != "as_is":
                in_pool = pc.is_in(rows.column("key"), value_set=kept_keys)
                details[f"{seed.name}/{seed.mode}/not_in_kept_pool"] = rows.num_rows - int(
                    pc.sum(in_pool).as_py() or 0
                )
                rows = rows.filter(in_pool)
            rows = apply_quota(rows, seed.quota)
            details[f"{seed.name}/{seed.mode}"] = len(pc.unique(rows.column("key")))
            parts.append(rows.cast(RETRIEVAL_SELECTION_SCHEMA))
        return pa.concat_tables(parts)

    def summarize(table: pa.Table) -> dict:
        unique = len(pc.unique(table.column("key"))) if table.num_rows else 0
        return {
            "rows_out": table.num_rows,
            "images": unique,
            "collisions": table.num_rows - unique,
            "per_seed": details,
        }

    stats = {
        "retrieval": run_table_stage(
            "retrieve",
            select,
            RETRIEVAL_SELECTION_SCHEMA,
            run.stage(f"{prefix}retrieval"),
            config=config,
            summarize=summarize,
        )
    }

    def sources() -> pa.Table:
        selection = storage.read_table(run.stage(f"{prefix}retrieval").path / TABLE_OUTPUT)
        order = [(s.name, s.mode) for s in config.seeds]
        first = first_provenance(selection, order)
        as_is_pairs = [s for s in config.seeds if s.mode == "as_is"]
        pool_first = first.filter(pc.not_equal(first.column("mode"), "as_is"))
        parts = [pool_sources(records, pool_first)]
        for seed in as_is_pairs:
            _, table = as_is_rows(cfg, seed)
            chosen = first.filter(
                pc.and_(
                    pc.equal(first.column("mode"), "as_is"),
                    pc.equal(first.column("seed_dataset"), seed.name),
                )
            )
            parts.append(
                table.filter(pc.is_in(table.column("key"), value_set=chosen.column("key")))
            )
        return pa.concat_tables(parts).sort_by("key")

    stats["retrieved_images"] = run_table_stage(
        "retrieved_images",
        sources,
        lineage_schema(SHARD_SOURCE_SCHEMA, storage.absolute(run.root)),
        run.stage(f"{prefix}retrieved_images"),
        config=config,
        summarize=lambda table: {"rows_out": table.num_rows},
    )
    return stats
