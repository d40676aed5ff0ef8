"""Retrieval modes as functions: the sharded seed search equals an exact global search, cluster
draws respect their clusters, quotas keep best ranks first, the union keeps config order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.stages.retrieve import (
    RetrieveConfig,
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
from schemas import STATUS_OK, embedding_schema


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embedding_table(keys, vectors, status=None) -> pa.Table:
    n, d = vectors.shape
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d),
            "model_id": pa.array(["m"] * n, pa.string()),
            "status": pa.array(status or [STATUS_OK] * n, pa.string()),
            "error_message": pa.nulls(n, pa.string()),
        },
        schema=embedding_schema(d),
    )


def _write_seeds(tmp_path, name, keys, vectors) -> str:
    import pyarrow.parquet as pq

    path = tmp_path / f"{name}.parquet"
    pq.write_table(_embedding_table(keys, vectors), path)
    return str(path)


def test_sharded_search_equals_the_exact_global_top_n(tmp_path):
    rng = np.random.default_rng(0)
    pool, seeds = _unit(rng, 900, 16), _unit(rng, 25, 16)
    pool_keys = [f"p{i:04d}" for i in range(len(pool))]
    seed_keys = [f"s{i:02d}" for i in range(len(seeds))]
    n = 5
    config = SeedSearchConfig(
        dim=16, seeds=(("web", n, (_write_seeds(tmp_path, "web", seed_keys, seeds),)),)
    )
    stage = SeedSearchStage(config)
    stage.setup()
    # Three "shards" of the pool, one failed row among them (null embedding: never returned).
    parts = []
    for rows in np.array_split(np.arange(len(pool)), 3):
        table = _embedding_table([pool_keys[r] for r in rows], pool[rows])
        parts.append(stage(table))
    failed = _embedding_table(["bad"], np.zeros((1, 16), np.float32), status=["decode_error"])
    assert stage(failed).num_rows == 0
    merged = merge_sample_candidates(pa.concat_tables(parts), {"web": n})

    sims = seeds @ pool.T
    expected = {
        (seed_keys[s], pool_keys[p]) for s in range(len(seeds)) for p in np.argsort(-sims[s])[:n]
    }
    got = set(zip(merged["seed_key"].to_pylist(), merged["key"].to_pylist(), strict=True))
    assert got == expected
    rows = merged.to_pylist()
    for row in rows:  # ranks 1..n by similarity, similarity exact
        s, p = seed_keys.index(row["seed_key"]), pool_keys.index(row["key"])
        assert row["similarity"] == pytest.approx(sims[s, p], abs=1e-5)
        order = np.argsort(-sims[s])
        assert pool_keys[order[row["rank"] - 1]] == row["key"]
    assert {r["mode"] for r in rows} == {"sample"}


def test_seeds_of_another_width_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    path = _write_seeds(tmp_path, "w", ["a"], _unit(rng, 1, 8))
    stage = SeedSearchStage(SeedSearchConfig(dim=16, seeds=(("w", 4, (path,)),)))
    with pytest.raises(ValueError, match="same model"):
        stage.setup()


def test_cluster_mode_draws_only_from_clusters_with_enough_seeds():
    pool_clusters = np.repeat(np.arange(4), [50, 30, 20, 5])
    pool_keys = [f"p{i:03d}" for i in range(len(pool_clusters))]
    seed_clusters = np.array([0, 0, 0, 1, 1, 3, 3, 3])  # cluster 2: no seeds; 1: two seeds
    rows = cluster_selection("web", seed_clusters, pool_keys, pool_clusters, 10, 3, seed=0)
    by_cluster = {}
    for row in rows.to_pylist():
        by_cluster.setdefault(row["cluster_id"], []).append(row["key"])
        assert pool_clusters[pool_keys.index(row["key"])] == row["cluster_id"]
    assert sorted(by_cluster) == [0, 3]
    assert len(by_cluster[0]) == 10 and len(set(by_cluster[0])) == 10
    assert len(by_cluster[3]) == 5  # the whole cluster when smaller than m
    again = cluster_selection("web", seed_clusters, pool_keys, pool_clusters, 10, 3, seed=0)
    other = cluster_selection("web", seed_clusters, pool_keys, pool_clusters, 10, 3, seed=1)
    assert again.equals(rows)
    assert other["key"].to_pylist() != rows["key"].to_pylist()


def test_quota_keeps_every_seed_images_nearest_hit_first():
    keys = [f"p{s}{r}" for s in range(5) for r in range(4)]
    rows = selection_rows(
        keys,
        "web",
        "sample",
        seed_keys=[f"s{s}" for s in range(5) for _ in range(4)],
        rank=[r + 1 for _ in range(5) for r in range(4)],
        similarity=[0.9 - 0.1 * r for _ in range(5) for r in range(4)],
    )
    capped = apply_quota(rows, 7)
    assert len(set(capped["key"].to_pylist())) == 7
    assert set(capped.filter(pa.compute.equal(capped["rank"], 1))["seed_key"].to_pylist()) == {
        f"s{s}" for s in range(5)
    }
    assert max(capped["rank"].to_pylist()) == 2
    assert apply_quota(rows, None).equals(rows)


def test_union_takes_each_image_once_with_its_first_provenance_in_config_order():
    a = selection_rows(["x", "y"], "first", "sample", seed_keys=["s1", "s2"], rank=[2, 1])
    b = selection_rows(["x", "z"], "second", "cluster", rank=[1, 1], cluster_id=[7, 7])
    first = first_provenance(pa.concat_tables([b, a]), [("first", "sample"), ("second", "cluster")])
    rows = {r["key"]: r for r in first.to_pylist()}
    assert sorted(rows) == ["x", "y", "z"]
    assert rows["x"]["seed_dataset"] == "first" and rows["x"]["seed_key"] == "s1"
    assert rows["z"]["cluster_id"] == 7


def test_config_errors_name_the_seed_dataset():
    with pytest.raises(ValueError, match="give images"):
        SeedDataset(name="web")
    with pytest.raises(ValueError, match="as_is needs"):
        SeedDataset(name="web", mode="as_is", embeddings="e")
    with pytest.raises(ValueError, match="size"):
        SeedDataset(name="pool", mode="balanced")
    with pytest.raises(ValueError, match="name"):
        SeedDataset(name="../x", embeddings="e")
    with pytest.raises(ValueError, match="more than once"):
        RetrieveConfig(seeds=(SeedDataset(name="a", embeddings="e"),) * 2)
    assert as_is_key("in22k", "a b/c") == "in22k-a_b_c"
