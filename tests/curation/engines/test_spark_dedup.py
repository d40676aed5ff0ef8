"""The Spark dedup (partitioned search, star components, per-component guard, decontamination)
gives exactly the in-process result of the index library on planted duplicates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.config import ConfigError
from curation.index.components import (
    choose_representatives,
    component_stats,
    components_table,
    connected_components,
    guarded_components,
    labels_of,
    priority_rank,
)
from curation.index.knn import cross_pairs, edges_table, knn_pairs
from schemas import DEDUP_COMPONENT_SCHEMA, DEDUP_EDGE_SCHEMA, SchemaError, embedding_schema

DIM = 128
N_POOL = 3000
N_EVAL = 40
N_TOPICS = 12
N_FAILED = 5  # pool rows whose embedding failed: never part of the result


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def near_copy(rng, base: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to the unit vector ``base``."""
    noise = rng.standard_normal(base.shape)
    noise -= (noise @ base) * base
    return unit(cosine * base + np.sqrt(1 - cosine**2) * unit(noise))


@dataclass
class Web:
    embeddings: list[Path]
    records: Path
    evals: Path
    keys: list[str]  # the ok pool keys, sorted: node i of the reference is keys[i]
    vectors: np.ndarray
    pixels: list[int | None]
    eval_vectors: np.ndarray
    chain: tuple[str, str, str]  # A ~ B ~ C, A !~ C
    group_member: str  # in a planted group, copied into the evaluation set
    loner: str  # an image with no duplicate, copied into the evaluation set


def write_embeddings(folder: Path, keys, vectors, failed=(), shards: int = 1) -> Path:
    folder.mkdir(parents=True)
    schema = embedding_schema(DIM)
    rows = [
        {"key": k, "embedding": v.tolist(), "model_id": "test", "status": "ok"}
        for k, v in zip(keys, vectors)
    ]
    rows += [
        {"key": k, "embedding": None, "model_id": "test", "status": "decode_error"} for k in failed
    ]
    for s in range(shards):
        part = pa.Table.from_pylist(rows[s::shards], schema=schema)
        pq.write_table(part, folder / f"shard-{s:05d}.parquet")
    return folder


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Web:
    """Images around N_TOPICS topics, holding planted copy groups, a chain, evaluation copies.

    Each image lies at cosine 0.5 to its topic and ~0 to the others, so the coarse cells are the
    topics and every planted pair shares one: these tests are about the Spark machinery giving
    the library's result; how often pairs straddle cells is tests/curation/index/test_partition.py's.
    """
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("spark_dedup")
    topics = unit(rng.standard_normal((N_TOPICS, DIM)))
    x = np.stack([near_copy(rng, topics[t], 0.5) for t in rng.integers(0, N_TOPICS, N_POOL)])
    row = 0
    for _ in range(30):  # copy groups of 2-5 around a base image
        size = int(rng.integers(2, 6))
        for member in range(1, size):
            x[row + member] = near_copy(rng, x[row], rng.uniform(0.8, 0.95))
        row += size
    # The chain: A and C 50 degrees either side of B in one plane, so A.B = B.C = 0.64 > 0.6 and
    # A.C = cos 100 deg < 0. Its evaluation copy lies 25 degrees beyond C: 0.91 to C, 0.26 to B.
    a, b, c = row, row + 1, row + 2
    side = near_copy(rng, x[b], 0.0)
    x[a] = unit(np.cos(np.radians(50)) * x[b] + np.sin(np.radians(50)) * side)
    x[c] = unit(np.cos(np.radians(50)) * x[b] - np.sin(np.radians(50)) * side)
    loner = row + 3
    names = [f"img-{i:05d}" for i in rng.permutation(N_POOL)]  # key order != planting order

    pixels = {names[i]: int(rng.integers(1, 50)) * 1000 for i in range(0, N_POOL, 3)}
    pixels[names[a]] = 10**7  # A ranks first and takes B: the guard leaves C on its own
    pixels[names[1]] = 10**7  # a copy, not the base, represents the first group
    records = root / "records"
    records.mkdir()
    record_rows = [{"key": k, "width": p, "height": 1, "status": "ok"} for k, p in pixels.items()]
    record_rows.append({"key": names[2], "width": None, "height": None, "status": "decode_error"})
    record_schema = pa.schema(
        [("key", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
         ("status", pa.string())]
    )  # fmt: skip
    pq.write_table(
        pa.Table.from_pylist(record_rows, schema=record_schema), records / "records.parquet"
    )

    eval_x = unit(rng.standard_normal((N_EVAL, DIM)))
    eval_x[0] = unit(np.cos(np.radians(75)) * x[b] - np.sin(np.radians(75)) * side)
    eval_x[1] = near_copy(rng, x[2], 0.8)  # a member of a planted group
    eval_x[2] = near_copy(rng, x[loner], 0.8)
    evals = write_embeddings(root / "eval_set", [f"ev-{i:03d}" for i in range(N_EVAL)], eval_x)

    embeddings = [
        write_embeddings(root / "pool_a", names[:2000], x[:2000], ["bad-1", "bad-2"], shards=2),
        write_embeddings(root / "pool_b", names[2000:], x[2000:], ["bad-3", "bad-4", "bad-5"]),
    ]
    order = np.argsort(names)
    keys = [names[i] for i in order]
    return Web(
        embeddings=embeddings,
        records=records,
        evals=evals,
        keys=keys,
        vectors=x[order],
        pixels=[pixels.get(k) for k in keys],
        eval_vectors=eval_x,
        chain=(names[a], names[b], names[c]),
        group_member=names[2],
        loner=names[loner],
    )


def reference(web: Web, guard: bool, threshold: float = 0.6, eval_threshold: float = 0.45):
    """The in-process result over all vectors at once: exact kNN, components, cross pairs."""
    n = len(web.keys)
    i, j, sim = knn_pairs(web.vectors, 64, threshold, index="flat")
    rank = priority_rank(pa.array(web.pixels, pa.int64()), web.keys)
    if guard:
        rep = guarded_components(n, i, j, sim, rank, threshold)
        labels = labels_of(rep)
    else:
        labels = connected_components(n, i, j)
        rep = choose_representatives(labels, rank)
    qi, _, _ = cross_pairs(web.vectors, web.eval_vectors, 64, eval_threshold, index="flat")
    contaminated = np.zeros(n, dtype=bool)
    contaminated[qi] = True
    table = components_table(web.keys, labels, rep, contaminated)
    return edges_table(web.keys, i, j, sim), table, component_stats(labels, web.keys)


def run(spark, web: Web, out: Path, **overrides):
    from curation.engines.spark_dedup import SparkDedupConfig, run_spark_dedup

    config = SparkDedupConfig(n_centroids=N_TOPICS, **overrides)
    return run_spark_dedup(
        spark, web.embeddings, out, config, records=[web.records], evals=[web.evals]
    )


def read_outputs(out: Path) -> tuple[pa.Table, pa.Table]:
    edges = pq.read_table(out / "edges", schema=DEDUP_EDGE_SCHEMA)
    components = pq.read_table(out / "components", schema=DEDUP_COMPONENT_SCHEMA)
    return edges, components


def check_against_reference(web: Web, out: Path, stats: dict, guard: bool) -> pa.Table:
    edges, components = read_outputs(out)
    ref_edges, ref_components, ref_stats = reference(web, guard)
    assert ref_edges.num_rows > 60  # the planted groups are there
    assert edges.equals(ref_edges)  # same pairs, same similarities, each once, sorted
    assert components.equals(ref_components)  # same groups, ids, representatives, reasons
    assert stats["groups"] == ref_stats
    reasons = pc.value_counts(ref_components["reason"]).to_pylist()
    counts = {r["values"]: r["counts"] for r in reasons}
    assert stats["kept"] == counts["kept"]
    assert stats["removed"] == {
        "duplicate": counts["duplicate"],
        "eval_contaminated": counts["eval_contaminated"],
    }
    assert stats["pairs"] == ref_edges.num_rows
    assert stats["centroids"] == N_TOPICS  # the search really was split into partitions
    return components


@pytest.fixture(scope="module")
def guarded(spark_session, web, tmp_path_factory):
    out = tmp_path_factory.mktemp("guarded") / "dedup"
    return out, run(spark_session, web, out, guard=True)


def rows_by_key(components: pa.Table) -> dict[str, dict]:
    return {r["key"]: r for r in components.to_pylist()}


def test_guarded_spark_dedup_equals_the_in_process_reference(guarded, web):
    out, stats = guarded
    components = check_against_reference(web, out, stats, guard=True)
    rows = rows_by_key(components)
    assert len(rows) == N_POOL  # failed embeddings are not images of the pool
    a, b, c = web.chain
    # A ranks first and takes B; C is not within the threshold of A, so it is its own group,
    # and only that group is removed for matching the evaluation copy of C.
    assert rows[b]["representative_key"] == a and rows[a]["keep"]
    assert rows[c]["representative_key"] == c and rows[c]["reason"] == "eval_contaminated"
    assert rows[web.loner]["reason"] == "eval_contaminated"
    # An evaluation copy of one member removes its whole group, the representative too.
    group = [
        k for k, r in rows.items() if r["component_id"] == rows[web.group_member]["component_id"]
    ]
    assert len(group) > 1
    assert all(rows[k]["reason"] == "eval_contaminated" for k in group)
    qi, ri, sim = cross_pairs(web.vectors, web.eval_vectors, 64, 0.45, index="flat")
    assert {c, web.loner, web.group_member} <= {web.keys[q] for q in qi}
    matched = stats["eval_sets"]["eval_set"]
    assert matched["pairs"] == matched["pool_images_matched"] == len(qi) <= 5
    assert sorted((e["pool_key"], e["eval_key"]) for e in matched["examples"]) == sorted(
        (web.keys[q], f"ev-{r:03d}") for q, r in zip(qi, ri)
    )


def test_unguarded_spark_dedup_equals_the_in_process_reference(spark_session, web, tmp_path):
    stats = run(spark_session, web, tmp_path / "dedup", guard=False)
    components = check_against_reference(web, tmp_path / "dedup", stats, guard=False)
    rows = rows_by_key(components)
    a, b, c = web.chain
    # Without the guard the chain is one component, removed whole for C's evaluation copy.
    assert rows[a]["component_id"] == rows[b]["component_id"] == rows[c]["component_id"]
    assert {rows[k]["reason"] for k in web.chain} == {"eval_contaminated"}


def test_a_finished_output_is_not_redone(spark_session, guarded, web):
    out, stats = guarded
    assert (out / "_SUCCESS").is_file() and (out / "_stats.json").is_file()
    files = sorted(out.rglob("*.parquet"))
    before = [p.stat().st_mtime_ns for p in files]
    assert run(spark_session, web, out, guard=True) == stats
    assert [p.stat().st_mtime_ns for p in files] == before
    with pytest.raises(ConfigError, match="other inputs or settings"):
        run(spark_session, web, out, guard=True, threshold=0.7)


def test_star_components_match_union_find_on_long_chains(spark_session):
    from curation.engines.spark_components import connected_component_roots

    rng = np.random.default_rng(3)
    n = 120
    # Long paths (several rounds of star operations) in a random key order, plus extra edges.
    order = rng.permutation(n)
    i = np.r_[order[:-1], rng.integers(0, n, 8)]
    j = np.r_[order[1:], rng.integers(0, n, 8)]
    cut = rng.choice(n - 1, 3, replace=False)  # break the path into 4 pieces
    keep = np.ones(len(i), dtype=bool)
    keep[cut] = False
    i, j = i[keep & (i != j)], j[keep & (i != j)]
    keys = [f"k{v:04d}" for v in range(n)]
    edges = spark_session.createDataFrame(
        [(keys[a], keys[b]) for a, b in zip(i, j)], "src_key string, dst_key string"
    )
    roots = dict(connected_component_roots(edges).rdd.map(tuple).collect())
    labels = connected_components(n, i, j)
    touched = np.unique(np.r_[i, j])
    assert sorted(roots) == [keys[v] for v in touched]
    for v in touched:
        smallest = keys[np.flatnonzero(labels == labels[v]).min()]
        assert roots[keys[v]] == smallest


def test_inputs_that_are_not_embeddings_are_refused(spark_session, web, tmp_path):
    from curation.engines.spark_dedup import SparkDedupConfig, run_spark_dedup

    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_spark_dedup(spark_session, [tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(SchemaError, match="does not hold EMBEDDING shards"):
        run_spark_dedup(spark_session, [web.records], tmp_path / "out")
    with pytest.raises(ValueError, match="replicas must be at least 2"):
        SparkDedupConfig(replicas=1)
