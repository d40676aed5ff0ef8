"""Embed and copy dedup on object storage (issue 13): ingest -> embed -> dedup with
``runs_dir=s3://...`` on a real S3-compatible server (moto) gives the same embeddings, copy pairs
and dedup components as the same run on local disk."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from curation import storage
from curation.engines import get_engine
from curation.io import write_parquet_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.dedup import run_dedup
from curation.jobs.embed import run_embed
from curation.jobs.ingest import run_ingest
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.readers.embeddings import read_embeddings
from curation.readers.input_shards import index_webdataset_tars
from curation.runner import TABLE_OUTPUT
from curation.stages.copy_dedup import CopyDedupConfig
from curation.stages.embed import EmbedConfig
from schemas import SchemaError, embedding_schema
from tests.curation.storage.conftest import BUCKET
from tests.curation.storage.test_runs_on_s3 import write_tars


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Tar shards whose last picture of each tar repeats the first's bytes, and a tiny
    descriptor checkpoint on local disk."""
    root = tmp_path_factory.mktemp("embed_inputs")
    write_tars(root / "tars")
    shards = index_webdataset_tars(sorted((root / "tars").glob("*.tar")), root / "index")
    torch.manual_seed(0)
    checkpoint = save_descriptor_checkpoint(
        root / "tiny.pt",
        build_descriptor("resnet18", dim=16, width=4),
        arch="resnet18",
        dim=16,
        arch_kwargs={"width": 4},
        inference={"size": 32, "resize": "square"},
    )
    return shards, checkpoint


def _sorted_edges(table: pa.Table) -> pa.Table:
    return table.sort_by([("src_key", "ascending"), ("dst_key", "ascending")])


def _pipeline(runs_dir: str, shards, checkpoint) -> dict:
    """Ingest, embed every ingested record (the byte copies too, so dedup has copies to find),
    then copy dedup; returns what each step left in the run folder."""
    embed = EmbedConfig(
        model="descriptor", checkpoint=checkpoint, device="cpu", batch_size=8, num_workers=0
    )
    cfg = CurationConfig(
        name="pool",
        runs_dir=runs_dir,
        embed=embed,
        dedup=CopyDedupConfig(threshold=0.999, eval_threshold=0.999),
    )
    run = cfg.run_dir
    with get_engine("local", progress=False) as engine:
        run_ingest(cfg, engine, shards)
        embed_stats = run_embed(cfg, engine, run.stage("ingest").outputs())
        # The first tar's images, embedded again, stand in for an evaluation set on the store.
        run_embed(cfg, engine, run.stage("ingest").outputs()[:1], stage="embed_eval_bench")
        eval_sets = {"bench": run.stage("embed_eval_bench").outputs()}
        dedup_stats = run_dedup(cfg, engine, eval_sets=eval_sets)
    keys, vectors = read_embeddings(run.stage("embed_sscd").outputs())
    order = np.argsort(keys)
    tables = {
        name: storage.read_table(run.stage(name).path / TABLE_OUTPUT).replace_schema_metadata(None)
        for name in ("dedup_edges", "dedup_copy")
    }
    kept = storage.read_table(run.stage("deduplicated_images").outputs(), columns=["key"])
    return {
        "run": run,
        "keys": [keys[o] for o in order],
        "vectors": vectors[order],
        "edges": _sorted_edges(tables["dedup_edges"]),
        "components": tables["dedup_copy"].sort_by("key"),
        "kept": sorted(kept.column("key").to_pylist()),
        "embed_stats": embed_stats,
        "dedup_stats": dedup_stats,
    }


def test_embed_and_dedup_on_s3_equal_local(s3_server, inputs, tmp_path):
    shards, checkpoint = inputs
    local = _pipeline(str(tmp_path / "runs"), shards, checkpoint)
    found = _pipeline(f"s3://{BUCKET}/embed-dedup", shards, checkpoint)

    assert isinstance(found["run"].root, storage.ObjectPath)
    for name in ("embed_sscd", "dedup_edges", "dedup_copy", "deduplicated_images"):
        assert found["run"].stage(name).is_complete(), name
    assert found["keys"] == local["keys"] and len(found["keys"]) == 18
    np.testing.assert_allclose(found["vectors"], local["vectors"], rtol=0, atol=1e-6)
    assert found["edges"].equals(local["edges"])
    assert found["components"].equals(local["components"])
    assert found["kept"] == local["kept"]
    # Each tar's last picture is a byte copy of its first: dedup groups them, keeps one.
    components = found["components"]
    group = dict(zip(components["key"].to_pylist(), components["component_id"].to_pylist()))
    for t in range(3):
        assert group[f"t{t}i5"] == group[f"t{t}i0"]
    assert len(found["kept"]) <= 15
    assert found["components"]["reason"].to_pylist().count("eval_contaminated") == 6  # tar 0
    stats, expected = found["dedup_stats"]["dedup_copy"], local["dedup_stats"]["dedup_copy"]
    assert stats["groups"] == expected["groups"]
    assert stats["eval_bench"]["pool_images_matched"] == 6
    # The embed stage's recorded config (read by dedup for a calibration) lives on the store.
    assert storage.exists(storage.join(found["run"].stage("embed_sscd").path, "_config.yaml"))
    assert not Path("s3:").exists()

    # The partitioned search writes its partitions and their pairs on the store too; with every
    # image in every partition it finds exactly the in-process pairs.
    run = found["run"]
    cfg = CurationConfig(
        name="partitioned",
        runs_dir=f"s3://{BUCKET}/embed-dedup",
        dedup=CopyDedupConfig(threshold=0.999, partitions=2, replicas=2),
    )
    with get_engine("local", progress=False) as engine:
        run_dedup(
            cfg,
            engine,
            embeddings=run.stage("embed_sscd").outputs(),
            records=run.stage("unique_images").outputs(),
        )
    partitions = storage.list_files(cfg.run_dir.root / "dedup_partitions", "*.parquet")
    assert len(partitions) == 2
    edges = storage.read_table(cfg.run_dir.stage("dedup_edges").path / TABLE_OUTPUT)
    assert _sorted_edges(edges.replace_schema_metadata(None)).equals(local["edges"])


def test_read_embeddings_through_the_storage_layer():
    """Shards on a filesystem only fsspec knows (``memory://``): a reader that hands URIs to
    pyarrow directly cannot open them; :func:`read_embeddings` goes through the storage layer."""
    schema = embedding_schema(2)
    shards = [f"memory://embeddings-{uuid.uuid4().hex[:8]}/part-{i:05d}.parquet" for i in (0, 1)]
    for i, shard in enumerate(shards):
        rows = np.array([[i, 1.0], [i, 2.0]], dtype=np.float32)
        table = pa.table(
            {
                "key": [f"s{i}a", f"s{i}b"],
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(rows.reshape(-1)), 2, mask=pa.array([False, i == 1])
                ),
                "model_id": ["m", "m"],
                "status": ["ok", "ok" if i == 0 else "decode_error"],
                "error_message": [None, None if i == 0 else "bad"],
            },
            schema=schema,
        )
        write_parquet_atomic(shard, table, schema)
    keys, matrix = read_embeddings(shards)
    assert keys == ["s0a", "s0b", "s1a"]
    np.testing.assert_array_equal(matrix, [[0, 1], [0, 2], [1, 1]])
    not_embeddings = shards[0].replace("part-00000", "records")
    write_parquet_atomic(
        not_embeddings, pa.table({"key": ["x"]}), pa.schema([("key", pa.string())])
    )
    with pytest.raises(SchemaError, match="not EMBEDDING shards"):
        read_embeddings([not_embeddings])
