"""``lvd dedup --engine spark`` runs the partitioned Spark dedup job into the run's stage folders and
gives the in-process ``lvd dedup`` result on planted embeddings."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.io import write_parquet_atomic
from schemas import IMAGE_RECORD_SCHEMA, embedding_schema

DIM, N_RANDOM, N_GROUPS, PARTITIONS = 96, 300, 25, 4


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_embeddings(path, keys, vectors):
    schema = embedding_schema(DIM)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    table = pa.table(
        {
            "key": keys,
            "embedding": pa.FixedSizeListArray.from_arrays(flat, DIM),
            "model_id": ["m"] * len(keys),
            "status": ["ok"] * len(keys),
            "error_message": pa.nulls(len(keys), pa.string()),
        },
        schema=schema,
    )
    write_parquet_atomic(path, table, schema)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Random images, copy groups of 2-4 around some of them (the copies smaller), a chain
    A ~ B ~ C with A !~ C, and an evaluation set holding near-copies of two originals."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("planted_spark")
    vectors = list(unit(rng.normal(size=(N_RANDOM, DIM))))
    keys = [f"img-{i:04d}" for i in range(N_RANDOM)]
    sides = [100] * N_RANDOM
    for g in range(N_GROUPS):
        for c in range(int(rng.integers(1, 4))):
            vectors.append(unit(vectors[g] + rng.uniform(0.35, 0.6) * unit(rng.normal(size=DIM))))
            keys.append(f"copy-{g:02d}-{c}")
            sides.append(50)
    a = unit(rng.normal(size=DIM))
    c = rng.normal(size=DIM)
    c = unit(c - (c @ a) * a)
    for key, vector, side in (("chain-a", a, 80), ("chain-b", unit(a + c), 40), ("chain-c", c, 60)):
        keys.append(key)
        vectors.append(vector)
        sides.append(side)
    x = np.asarray(vectors, dtype=np.float32)
    for p in range(2):
        write_embeddings(root / "emb" / f"part-{p:05d}.parquet", keys[p::2], x[p::2])
    evals = unit(x[[3, 9]] + 0.3 * unit(rng.normal(size=(2, DIM))))
    write_embeddings(root / "eval" / "part-00000.parquet", ["e0", "e1"], evals)
    n = len(keys)
    records = pa.table(
        {
            "key": keys,
            "url": pa.nulls(n, pa.string()),
            "sha256": pa.nulls(n, pa.string()),
            "width": pa.array(sides, pa.int32()),
            "height": pa.array(sides, pa.int32()),
            "status": ["ok"] * n,
            "error_message": pa.nulls(n, pa.string()),
            "source_file": pa.nulls(n, pa.string()),
            "source_offset": pa.nulls(n, pa.int64()),
            "source_size": pa.nulls(n, pa.int64()),
        },
        schema=IMAGE_RECORD_SCHEMA,
    )
    write_parquet_atomic(root / "records" / "part-00000.parquet", records, IMAGE_RECORD_SCHEMA)
    return root


def lvd_dedup(planted, name, *overrides, engine="local"):
    code = main(
        [
            "dedup",
            "--embeddings", str(planted / "emb"),
            "--records", str(planted / "records"),
            "--eval", f"bench={planted / 'eval'}",
            "--run", name,
            "--engine", engine,
            f"runs_dir={planted / 'runs'}",
            *overrides,
        ]
    )  # fmt: skip
    assert code == 0
    run = planted / "runs" / name
    components = pq.read_table(run / "dedup_copy").sort_by("key")
    kept = set(pq.read_table(run / "deduplicated_images", columns=["key"])["key"].to_pylist())
    stats = {
        stage: json.loads((run / stage / "_stats.json").read_text())
        for stage in ("dedup_edges", "dedup_copy", "deduplicated_images")
    }
    return components, kept, stats


def test_lvd_dedup_on_spark_gives_the_in_process_kept_set(planted, spark_session):
    components, kept, stats = lvd_dedup(planted, "in_process")
    on_spark, spark_kept, spark_stats = lvd_dedup(
        planted, "spark", f"dedup.partitions={PARTITIONS}", engine="spark"
    )
    # The Spark job ran (its coarse partitions), not the generic per-shard stage.
    assert spark_stats["dedup_copy"].get("engine") == "spark"
    assert spark_stats["dedup_copy"]["centroids"] == PARTITIONS
    assert spark_kept == kept
    assert 0 < len(kept) < len(components)
    columns = ["key", "representative_key", "keep", "reason"]
    assert on_spark.select(columns).equals(components.select(columns))
    for field in ("rows_in", "rows_out", "pairs", "guard", "eval_bench", "scoring"):
        assert spark_stats["dedup_copy"][field] == stats["dedup_copy"][field], field
    groups, spark_groups = (
        dict(stats["dedup_copy"]["groups"]),
        dict(spark_stats["dedup_copy"]["groups"]),
    )
    # The largest groups: the same sizes (groups of equal size may be listed in another order).
    largest, spark_largest = groups.pop("largest"), spark_groups.pop("largest")
    assert [len(g) for g in spark_largest] == [len(g) for g in largest]
    assert spark_groups == groups
    assert {k for k in stats["dedup_copy"] if k.startswith("reason_")} == {
        k for k in spark_stats["dedup_copy"] if k.startswith("reason_")
    }
    assert spark_stats["dedup_edges"]["rows_out"] == stats["dedup_edges"]["rows_out"]
    edges = pq.read_table(planted / "runs" / "spark" / "dedup_edges")
    assert edges.num_rows == stats["dedup_edges"]["rows_out"] > N_GROUPS
    # The guard kept the chain apart and the evaluation copies took their groups with them.
    rows = {r["key"]: r for r in on_spark.to_pylist()}
    assert rows["chain-c"]["representative_key"] == "chain-c"
    assert rows["img-0003"]["reason"] == rows["copy-03-0"]["reason"] == "eval_contaminated"
    # A rerun finds both stages complete.
    again = lvd_dedup(planted, "spark", f"dedup.partitions={PARTITIONS}", engine="spark")
    assert again[2]["dedup_copy"] == spark_stats["dedup_copy"]
