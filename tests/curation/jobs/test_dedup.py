"""The copy-dedup job on planted embeddings: every planted group becomes one kept image (the
largest), evaluation copies take their whole group with them, and the in-process search, the
partitioned search on the local engine and on Ray give the same result."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.config import ConfigError, load_config
from curation.engines import get_engine
from curation.io import write_parquet_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.dedup import run_dedup
from curation.runner import TABLE_OUTPUT
from schemas import IMAGE_RECORD_SCHEMA, embedding_schema

DIM, N_GROUPS = 128, 40  # 128-d: random pairs stay far below 0.45


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """400 random images, 40 planted groups of 2-4 copies (cosine ~0.8-0.95 to their original),
    a chain A~B~C with A !~ C, and an evaluation set holding near-copies of two originals."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("planted")
    base = unit(rng.normal(size=(400, DIM)))
    keys = [f"img-{i:04d}" for i in range(400)]
    vectors, groups, pixels = list(base), {}, [100 * 100] * 400
    for g in range(N_GROUPS):
        members = [keys[g]]
        for c in range(int(rng.integers(1, 4))):
            noise = unit(rng.normal(size=DIM))
            copy = unit(base[g] + rng.uniform(0.35, 0.6) * noise)
            keys.append(f"copy-{g:02d}-{c}")
            vectors.append(copy)
            pixels.append(50 * 50)  # smaller than the original: the original is kept
            members.append(keys[-1])
        groups[keys[g]] = members
    # A chain: B lies between A and C (cosine 0.71 to each); A and C are orthogonal, not copies.
    a = unit(rng.normal(size=DIM))
    c = rng.normal(size=DIM)
    c = unit(c - (c @ a) * a)
    b = unit(a + c)
    for key, vector, side in (("chain-a", a, 80), ("chain-b", b, 40), ("chain-c", c, 60)):
        keys.append(key)
        vectors.append(vector)
        pixels.append(side * side)
    vectors = np.asarray(vectors, dtype=np.float32)
    evals = unit(vectors[[5, 7]] + 0.3 * unit(rng.normal(size=(2, DIM))))

    def write_embeddings(path, names, matrix):
        schema = embedding_schema(DIM)
        flat = pa.array(matrix.astype(np.float32).reshape(-1), pa.float32())
        table = pa.table(
            {
                "key": names,
                "embedding": pa.FixedSizeListArray.from_arrays(flat, DIM),
                "model_id": ["m"] * len(names),
                "status": ["ok"] * len(names),
                "error_message": pa.nulls(len(names), pa.string()),
            },
            schema=schema,
        )
        write_parquet_atomic(path, table, schema)
        return path

    pool = [
        write_embeddings(root / "emb" / f"part-{p:05d}.parquet", keys[p::2], vectors[p::2])
        for p in range(2)
    ]
    eval_set = [write_embeddings(root / "eval" / "part-00000.parquet", ["e0", "e1"], evals)]
    side = [int(np.sqrt(p)) for p in pixels]
    records = pa.table(
        {
            "key": keys,
            "url": pa.nulls(len(keys), pa.string()),
            "sha256": pa.nulls(len(keys), pa.string()),
            "width": pa.array(side, pa.int32()),
            "height": pa.array(side, pa.int32()),
            "status": ["ok"] * len(keys),
            "error_message": pa.nulls(len(keys), pa.string()),
            "source_file": pa.nulls(len(keys), pa.string()),
            "source_offset": pa.nulls(len(keys), pa.int64()),
            "source_size": pa.nulls(len(keys), pa.int64()),
        },
        schema=IMAGE_RECORD_SCHEMA,
    )
    record_path = root / "records" / "part-00000.parquet"
    write_parquet_atomic(record_path, records, IMAGE_RECORD_SCHEMA)
    return {
        "root": root,
        "pool": pool,
        "eval": eval_set,
        "records": [record_path],
        "groups": groups,
        "keys": keys,
    }


def dedup(planted, engine, name, *overrides):
    cfg = load_config(
        CurationConfig, [], [f"runs_dir={planted['root']}", f"name={name}", *overrides]
    )
    stats = run_dedup(cfg, engine, planted["pool"], planted["records"], {"bench": planted["eval"]})
    components = pq.read_table(cfg.run_dir.stage("dedup_copy").path / TABLE_OUTPUT)
    kept = pq.read_table(cfg.run_dir.stage("deduplicated_images").outputs(), columns=["key"])
    return stats, components, set(kept.column("key").to_pylist())


@pytest.fixture(scope="module")
def in_process(planted):
    with get_engine("local", progress=False) as engine:
        return dedup(planted, engine, "in_process")


def test_each_planted_group_keeps_its_original_alone(planted, in_process):
    stats, components, kept = in_process
    rows = {r["key"]: r for r in components.to_pylist()}
    contaminated = {"img-0005", "img-0007"}
    for original, members in planted["groups"].items():
        representatives = {rows[m]["representative_key"] for m in members}
        assert representatives == {original}, (original, representatives)
        if original in contaminated:
            assert all(rows[m]["reason"] == "eval_contaminated" for m in members)
        else:
            assert original in kept and not set(members[1:]) & kept
    # The guard: A (largest) takes B, its direct copy; C is B's copy but not A's: it stays apart.
    assert rows["chain-b"]["representative_key"] == "chain-a"
    assert rows["chain-c"]["representative_key"] == "chain-c"
    copies = sum(len(m) - 1 for m in planted["groups"].values())
    contaminated_images = sum(len(planted["groups"][k]) for k in contaminated)
    assert stats["dedup_copy"]["reason_duplicate"] == copies - (contaminated_images - 2) + 1
    assert stats["dedup_copy"]["reason_eval_contaminated"] == contaminated_images
    assert len(kept) == 400 - len(contaminated) + 2  # the randoms and originals, chain-a, chain-c
    assert stats["dedup_copy"]["eval_bench"]["pool_images_matched"] >= 2


def test_guard_off_gives_connected_components(planted):
    with get_engine("local", progress=False) as engine:
        _, components, _ = dedup(planted, engine, "no_guard", "dedup.guard=false")
    rows = {r["key"]: r for r in components.to_pylist()}
    # Connected components chain A-B-C into one group kept as its largest image, A.
    assert rows["chain-a"]["component_id"] == rows["chain-c"]["component_id"]
    assert rows["chain-c"]["representative_key"] == "chain-a"


def test_partitioned_search_gives_the_same_result_locally_and_on_ray(
    planted, in_process, ray_runtime
):
    _, reference, kept = in_process
    with get_engine("local", progress=False) as engine:
        _, local, local_kept = dedup(planted, engine, "parts_local", "dedup.partitions=4")
    engine = get_engine("ray", num_workers=2)
    try:
        _, on_ray, ray_kept = dedup(planted, engine, "parts_ray", "dedup.partitions=4")
    finally:
        engine.close()
    assert local.equals(reference) and on_ray.equals(reference)
    assert local_kept == ray_kept == kept


def test_cli_dedups_a_run_with_an_eval_folder(planted, tmp_path, capsys):
    code = main(
        [
            "dedup",
            "--embeddings",
            str(planted["pool"][0].parent),
            "--records",
            str(planted["records"][0].parent),
            "--eval",
            f"bench={planted['eval'][0].parent}",
            f"runs_dir={tmp_path}",
            "--run",
            "cli",
        ]
    )
    assert code == 0
    components = pq.read_table(tmp_path / "cli" / "dedup_copy")
    assert components.num_rows == len(planted["keys"])
    assert "reason_eval_contaminated" in capsys.readouterr().out


def test_a_finished_dedup_is_skipped_and_settings_are_checked(planted, in_process):
    with get_engine("local", progress=False) as engine:
        again, _, _ = dedup(planted, engine, "in_process")
    assert again["dedup_copy"] == in_process[0]["dedup_copy"]
    with pytest.raises(ConfigError, match="dedup.index: expected one of 'auto', 'flat'"):
        load_config(CurationConfig, [], ["dedup.index=hnsw"])
    with pytest.raises(ValueError, match="replicas must be at least 1"):
        replace(CurationConfig().dedup, partitions=2, replicas=0)
