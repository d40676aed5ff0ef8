"""The retrieval job on the synthetic web: ingest -> clusters -> retrieval in every mode.

Retrieval embeddings here are written by the test, one vector per image from its ground-truth
class (a class centre plus noise), so the test checks what the job does with embeddings (which
pool images each mode selects, provenance, the union, the kept set, engines) independently of how
good an embedder is; the embedders' own precision on the synthetic web is measured by
``benchmarks/bench_retrieval.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.config import ConfigError
from curation.engines import get_engine
from curation.io import write_json_atomic, write_parquet_atomic
from curation.jobs.cluster import run_cluster
from curation.jobs.config import CurationConfig
from curation.jobs.ingest import run_ingest
from curation.jobs.retrieve import run_retrieve
from curation.readers.image_bytes import ImageBytesReader, resolve_lineage
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.rundir import StageDir
from curation.stages.cluster import ClusterConfig
from curation.stages.retrieve import RetrieveConfig, SeedDataset
from schemas import STATUS_OK, embedding_schema

DIM = 32
NOISE = 0.12  # per-dimension noise around the class centre (norm ~0.7 against 1)


def _vectors(class_ids, seed: int) -> np.ndarray:
    centres = np.random.default_rng(123).standard_normal((16, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = np.random.default_rng(seed).standard_normal((len(class_ids), DIM)).astype(np.float32)
    return centres[np.asarray(class_ids)] + NOISE * noise


def _embedding_table(keys, vectors, model_id="synthetic-classes") -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
            "model_id": pa.array([model_id] * n, pa.string()),
            "status": pa.array([STATUS_OK] * n, pa.string()),
            "error_message": pa.nulls(n, pa.string()),
        },
        schema=embedding_schema(DIM),
    )


def _write_stage(stage: StageDir, tables: list[pa.Table]) -> None:
    """Shards in a stage folder the way the runner leaves them: output, then marker, _SUCCESS."""
    for index, table in enumerate(tables):
        stem = f"part-{index:05d}"
        write_parquet_atomic(stage.shard_output(stem), table, table.schema)
        output = stage.shard_output(stem)
        write_json_atomic(stage.shard_marker(stem), {"output_size": output.stat().st_size})
    stage.mark_complete()


@pytest.fixture(scope="module")
def web_run(small_web, tmp_path_factory):
    """A run with the small web ingested, pool and seed retrieval embeddings, and 6 clusters."""
    root = tmp_path_factory.mktemp("retrieve")
    truth = pq.read_table(small_web.root / "ground_truth" / "pool.parquet").to_pylist()
    classes = {row["key"]: row["class_id"] for row in truth}
    shards = write_encoded_shards(
        list_image_files(small_web.pool_dir), root / "in", rows_per_shard=50
    )
    cfg = CurationConfig(name="web", runs_dir=root / "runs", cluster=ClusterConfig(k=6))
    engine = get_engine("local", progress=False)
    run_ingest(cfg, engine, shards)
    kept = pq.read_table(cfg.run_dir.stage("unique_images").outputs(), columns=["key"])
    pool_keys = sorted(kept.column("key").to_pylist())
    vectors = _vectors([classes[k] for k in pool_keys], seed=1)
    parts = np.array_split(np.arange(len(pool_keys)), 3)  # three pool shards: a sharded search
    _write_stage(
        cfg.run_dir.stage("embed_retrieval"),
        [_embedding_table([pool_keys[i] for i in rows], vectors[rows]) for rows in parts],
    )
    seed_truth = pq.read_table(small_web.root / "ground_truth" / "seed.parquet").to_pylist()
    seed_keys = [row["key"] for row in seed_truth]
    seed_folder = root / "seed_embeddings"
    seed_folder.mkdir()
    seed_vectors = _vectors([row["class_id"] for row in seed_truth], seed=2)
    pq.write_table(_embedding_table(seed_keys, seed_vectors), seed_folder / "part-00000.parquet")
    run_cluster(cfg, engine)
    seed_classes = {row["class_id"] for row in seed_truth}
    return cfg, classes, seed_classes, seed_folder, small_web.root / "images" / "seed"


def _seeds(seed_folder, seed_images, n=4):
    return RetrieveConfig(
        seeds=(
            SeedDataset(name="web", mode="as_is", images=seed_images),
            SeedDataset(name="web", mode="sample", embeddings=str(seed_folder), n=n),
            SeedDataset(name="webc", mode="cluster", embeddings=str(seed_folder), m=8, min_seeds=3),
            SeedDataset(name="pool", mode="balanced", size=12),
        )
    )


@pytest.fixture(scope="module")
def retrieved(web_run):
    cfg, classes, seed_classes, seed_folder, seed_images = web_run
    cfg = dataclasses.replace(cfg, retrieve=_seeds(seed_folder, seed_images))
    stats = run_retrieve(cfg, get_engine("local", progress=False))
    selection = pq.read_table(cfg.run_dir.stage("retrieval").outputs())
    sources = pq.read_table(cfg.run_dir.stage("retrieved_images").outputs())
    return cfg, stats, selection, sources


def _mode(selection: pa.Table, mode: str) -> pa.Table:
    return selection.filter(pc.equal(selection.column("mode"), mode))


def test_sample_and_cluster_modes_pick_the_seed_classes(web_run, retrieved):
    _, classes, seed_classes, _, _ = web_run
    cfg, _, selection, _ = retrieved
    kept = pq.read_table(cfg.run_dir.stage("unique_images").outputs(), columns=["key"])
    pool = kept.column("key").to_pylist()
    base = np.mean([classes[k] in seed_classes for k in pool])
    for mode in ("sample", "cluster"):
        keys = set(_mode(selection, mode).column("key").to_pylist())
        assert keys <= set(pool)  # only kept pool images
        precision = np.mean([classes[k] in seed_classes for k in keys])
        assert len(keys) >= 10
        assert precision >= 0.9 and precision > 2 * base, (mode, precision, base)
    sample = _mode(selection, "sample")
    assert set(pc.unique(sample.column("rank")).to_pylist()) == {1, 2, 3, 4}
    counts = pc.value_counts(sample.column("seed_key")).to_pylist()
    assert {c["counts"] for c in counts} == {4}  # each seed image its 4 nearest


def test_cluster_mode_takes_only_clusters_with_enough_seed_images(web_run, retrieved):
    cfg = retrieved[0]
    clusters = pq.read_table(cfg.run_dir.stage("clusters").outputs())
    cluster_of = dict(zip(clusters["key"].to_pylist(), clusters["cluster_id"].to_pylist()))
    rows = _mode(retrieved[2], "cluster").to_pylist()
    for row in rows:
        assert cluster_of[row["key"]] == row["cluster_id"]
    per_cluster = pc.value_counts(pa.array([r["cluster_id"] for r in rows])).to_pylist()
    assert all(c["counts"] <= 8 for c in per_cluster)  # m = 8 per cluster


def test_union_holds_each_image_once_with_bytes_that_read_back(web_run, retrieved, small_web):
    cfg, stats, selection, sources = retrieved
    keys = sources.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == len(pc.unique(selection.column("key")))
    assert stats["retrieval"]["collisions"] == selection.num_rows - len(keys)
    as_is = sources.filter(pc.equal(sources.column("mode"), "as_is")).to_pylist()
    seed_files = list_image_files(small_web.root / "images" / "seed")
    assert sorted(r["key"] for r in as_is) == sorted(f"web-{f.stem}" for f in seed_files)
    for row in as_is:
        data = (small_web.root / "images" / "seed" / f"{row['seed_key']}.jpg").read_bytes()
        assert row["image"] == data and row["sha256"] == hashlib.sha256(data).hexdigest()
    pool_rows = resolve_lineage(
        sources.filter(pc.not_equal(sources.column("mode"), "as_is")), cfg.run_dir.root
    ).to_pylist()
    assert pool_rows and all(r["image"] is None for r in pool_rows)
    with ImageBytesReader() as reader:
        for row in pool_rows[:20]:
            data = reader.read(
                row["source_file"], row["source_offset"], row["source_size"], row["key"]
            )
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
    balanced = _mode(selection, "balanced")
    assert balanced.num_rows == 12 and len(set(balanced.column("key").to_pylist())) == 12


def test_quota_caps_a_seed_dataset_and_rerun_is_skipped(web_run, tmp_path):
    cfg, _, _, seed_folder, seed_images = web_run
    cfg = _copy_run(cfg, tmp_path, "quota")
    seeds = (SeedDataset(name="web", mode="sample", embeddings=str(seed_folder), n=4, quota=5),)
    cfg = dataclasses.replace(cfg, retrieve=RetrieveConfig(seeds=seeds))
    engine = get_engine("local", progress=False)
    first = run_retrieve(cfg, engine)
    selection = pq.read_table(cfg.run_dir.stage("retrieval").outputs())
    assert len(set(selection.column("key").to_pylist())) == 5
    # Nearest hits before second ones: every image kept is some seed image's rank-1 hit (all
    # rows of a kept image stay, for its provenance).
    nearest = selection.filter(pc.equal(selection.column("rank"), 1)).column("key").to_pylist()
    assert set(selection.column("key").to_pylist()) == set(nearest)
    assert run_retrieve(cfg, engine) == first


def test_ray_engine_selects_the_same_images(web_run, retrieved, tmp_path, ray_runtime):
    cfg = _copy_run(retrieved[0], tmp_path, "ray")
    with get_engine("ray", num_workers=2) as engine:
        run_retrieve(cfg, engine)
    on_ray = pq.read_table(cfg.run_dir.stage("retrieval").outputs())
    assert on_ray.equals(retrieved[2])


def test_seeds_embedded_by_another_model_are_refused(web_run, tmp_path):
    cfg, _, _, seed_folder, _ = web_run
    cfg = _copy_run(cfg, tmp_path, "other")
    other = tmp_path / "other_model"
    other.mkdir()
    table = pq.read_table(seed_folder / "part-00000.parquet")
    table = table.set_column(2, "model_id", pa.array(["another"] * table.num_rows))
    pq.write_table(table, other / "part-00000.parquet")
    seeds = (SeedDataset(name="web", mode="sample", embeddings=str(other)),)
    with pytest.raises(ConfigError, match="same retrieval model"):
        run_retrieve(
            dataclasses.replace(cfg, retrieve=RetrieveConfig(seeds=seeds)), get_engine("local")
        )


def _copy_run(cfg: CurationConfig, tmp_path, name: str) -> CurationConfig:
    """The run's inputs to retrieval (records, embeddings, clusters) under a new run folder."""
    target = tmp_path / "runs" / name
    for stage in ("unique_images", "embed_retrieval", "cluster_centroids", "clusters"):
        shutil.copytree(cfg.run_dir.root / stage, target / stage)
    return dataclasses.replace(cfg, runs_dir=tmp_path / "runs", name=name)


def test_spark_engine_assigns_the_same_clusters(web_run, tmp_path, spark_session):
    cfg = _copy_run(web_run[0], tmp_path, "spark")
    shutil.rmtree(cfg.run_dir.root / "clusters")
    with get_engine("spark") as engine:
        stats = run_cluster(cfg, engine)
    assert stats["clusters"]["engine"] == "spark"
    on_spark = pq.read_table(cfg.run_dir.stage("clusters").outputs()).sort_by("key")
    local = pq.read_table(web_run[0].run_dir.stage("clusters").outputs()).sort_by("key")
    assert on_spark.equals(local)


def test_only_images_the_copy_dedup_kept_are_retrieved(web_run, tmp_path):
    cfg, _, _, seed_folder, _ = web_run
    cfg = _copy_run(cfg, tmp_path, "kept")
    records = pq.read_table(cfg.run_dir.stage("unique_images").outputs())
    kept = records.take(np.arange(0, records.num_rows, 2))  # every other image survives dedup
    _write_stage(cfg.run_dir.stage("deduplicated_images"), [kept])
    seeds = (SeedDataset(name="web", mode="sample", embeddings=str(seed_folder), n=4),)
    stats = run_retrieve(
        dataclasses.replace(cfg, retrieve=RetrieveConfig(seeds=seeds)), get_engine("local")
    )
    selected = set(pq.read_table(cfg.run_dir.stage("retrieval").outputs())["key"].to_pylist())
    assert selected and selected <= set(kept["key"].to_pylist())
    assert stats["retrieval"]["per_seed"]["web/sample/not_in_kept_pool"] > 0


def test_lvd_cluster_and_retrieve_commands(web_run, tmp_path, capsys):
    cfg, classes, seed_classes, seed_folder, _ = web_run
    copy = _copy_run(cfg, tmp_path, "cli")
    for stage in ("cluster_centroids", "clusters"):
        shutil.rmtree(copy.run_dir.root / stage)
    where = [f"runs_dir={copy.runs_dir}", f"name={copy.name}"]
    assert main(["cluster", *where, "cluster.k=6"]) == 0
    clusters = pq.read_table(copy.run_dir.stage("clusters").outputs())
    assert clusters.num_rows == pq.read_table(cfg.run_dir.stage("clusters").outputs()).num_rows
    capsys.readouterr()
    assert main(["retrieve", "--seed", f"web={seed_folder}", *where]) == 0
    stats = json.loads(capsys.readouterr().out)
    selection = pq.read_table(copy.run_dir.stage("retrieval").outputs())
    keys = set(selection.column("key").to_pylist())
    assert stats["retrieval"]["images"] == len(keys) > 0
    assert np.mean([classes[k] in seed_classes for k in keys]) >= 0.9
