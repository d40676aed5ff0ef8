"""Failures are rows in the embed output: a corrupt image keeps its key with a null embedding and
its reason, under the local engine and under Ray, and the stats count it."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.engines import get_engine
from curation.io import write_parquet_atomic
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.readers.embeddings import read_embeddings
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.stages.embed import EmbedConfig, embed_stage_spec
from schemas import ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA, embedding_schema

DIM = 8


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_descriptor_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        build_descriptor("resnet18", dim=DIM, width=8),
        arch="resnet18",
        dim=DIM,
        arch_kwargs={"width": 8},
        inference={"size": 32, "resize": "square"},
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two ENCODED_IMAGE shards: good JPEGs, a truncated JPEG, random bytes, an empty image and a
    row whose bytes live in a file that does not exist."""
    root = tmp_path_factory.mktemp("encoded")
    good = [jpeg(i) for i in range(6)]
    rows = [{"key": f"good-{i}", "image": data} for i, data in enumerate(good)]
    rows += [
        {"key": "truncated", "image": good[0][:200]},
        {"key": "noise", "image": b"this is not an image at all"},
        {"key": "empty", "image": b""},
    ]
    missing = {"key": "missing", "image": None, "source_file": str(root / "gone.tar")}
    rows.append({**missing, "source_offset": 0, "source_size": 10})
    full = [
        {"url": None, "source_file": None, "source_offset": None, "source_size": None, **row}
        for row in rows
    ]
    paths = []
    for number, part in enumerate((full[:5], full[5:])):
        path = root / f"part-{number:05d}.parquet"
        table = pa.Table.from_pylist(part, schema=ENCODED_IMAGE_SCHEMA)
        write_parquet_atomic(path, table, ENCODED_IMAGE_SCHEMA)
        paths.append(path)
    return paths


def embed(engine, checkpoint, shards, root, **kw):
    config = EmbedConfig(
        model="descriptor",
        checkpoint=checkpoint,
        input="encoded_image",
        device="cpu",
        batch_size=4,
        num_workers=1,
        threads=1,
        **kw,
    )
    stage_dir = RunDir(root).stage("embed_sscd")
    stats = run_stage(embed_stage_spec(config), shards, stage_dir, engine)
    return stats, pq.read_table(stage_dir.outputs()).sort_by("key"), stage_dir


def check_failures(stats, table):
    assert table.schema.equals(embedding_schema(DIM), check_metadata=False)
    rows = {r["key"]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted(
        [f"good-{i}" for i in range(6)] + ["truncated", "noise", "empty", "missing"]
    )
    for key in ("truncated", "noise"):
        assert rows[key]["status"] == "decode_error", rows[key]
        assert rows[key]["embedding"] is None
        assert rows[key]["error_message"]
    assert rows["empty"]["status"] == "empty"
    assert rows["missing"]["status"] == "read_error"
    assert "gone.tar" in rows["missing"]["error_message"]
    for i in range(6):
        row = rows[f"good-{i}"]
        assert row["status"] == "ok" and row["error_message"] is None
        assert np.isclose(np.linalg.norm(row["embedding"]), 1.0, atol=1e-4)
    assert stats["rows_in"] == stats["rows_out"] == 10
    assert stats["status_ok"] == 6
    assert stats["status_decode_error"] == 2
    assert stats["status_read_error"] == 1


def test_corrupt_images_are_failed_rows_locally(checkpoint, shards, tmp_path):
    with get_engine("local", progress=False) as engine:
        stats, table, stage_dir = embed(engine, checkpoint, shards, tmp_path)
    check_failures(stats, table)
    keys, matrix = read_embeddings(stage_dir.outputs())
    assert sorted(keys) == [f"good-{i}" for i in range(6)]
    assert matrix.shape == (6, DIM) and np.isfinite(matrix).all()


def test_corrupt_images_are_failed_rows_on_ray(ray_runtime, checkpoint, shards, tmp_path):
    with get_engine("local", progress=False) as engine:
        _, local, _ = embed(engine, checkpoint, shards, tmp_path / "local")
    engine = get_engine("ray", num_workers=2)
    try:
        stats, table, _ = embed(engine, checkpoint, shards, tmp_path / "ray")
    finally:
        engine.close()
    check_failures(stats, table)
    assert table.drop(["embedding"]).equals(local.drop(["embedding"]))
    ok = [r["embedding"] for r in table.to_pylist() if r["status"] == "ok"]
    ok_local = [r["embedding"] for r in local.to_pylist() if r["status"] == "ok"]
    np.testing.assert_allclose(np.array(ok), np.array(ok_local), atol=1e-6)


def test_records_not_ok_upstream_keep_their_status(checkpoint, tmp_path):
    """IMAGE_RECORD rows that ingest rejected are carried with their status, not embedded."""
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg(1))
    rows = [
        {"key": "fine", "status": "ok", "error_message": None, "source_file": str(good)},
        {"key": "tiny", "status": "rejected_too_small", "error_message": "3x3: a side is below 32"},
    ]
    table = pa.Table.from_pylist(
        [
            {
                "url": None,
                "sha256": None,
                "width": None,
                "height": None,
                "source_file": None,
                "source_offset": 0,
                "source_size": good.stat().st_size,
                **row,
            }
            for row in rows
        ],
        schema=IMAGE_RECORD_SCHEMA,
    )
    path = tmp_path / "records" / "part-00000.parquet"
    write_parquet_atomic(path, table, IMAGE_RECORD_SCHEMA)
    config = EmbedConfig(
        model="descriptor", checkpoint=checkpoint, device="cpu", num_workers=0, threads=1
    )
    stage_dir = RunDir(tmp_path).stage("embed")
    with get_engine("local", progress=False) as engine:
        run_stage(embed_stage_spec(config), [path], stage_dir, engine)
    out = {r["key"]: r for r in pq.read_table(stage_dir.outputs()).to_pylist()}
    assert out["fine"]["status"] == "ok" and out["fine"]["embedding"] is not None
    assert out["tiny"]["status"] == "rejected_too_small"
    assert out["tiny"]["error_message"] == "3x3: a side is below 32"
    assert out["tiny"]["embedding"] is None
