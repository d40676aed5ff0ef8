"""The embed stage gives the local engine's embeddings under Ray (actor pool, with thread or
process decoding) and under Spark."""

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curation.engines import get_engine
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.stages.embed import EmbedConfig, embed_stage_spec


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> EmbedConfig:
    torch.manual_seed(0)
    path = save_descriptor_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        build_descriptor("resnet18", dim=16, width=8),
        arch="resnet18",
        dim=16,
        arch_kwargs={"width": 8},
        inference={"size": 32, "resize": "square"},
    )
    return EmbedConfig(
        model="descriptor",
        checkpoint=path,
        input="encoded_image",
        device="cpu",
        batch_size=16,
        num_workers=1,  # one decode worker per stage worker (a thread on the CPU by default)
        threads=1,
    )


@pytest.fixture(scope="module")
def shards(small_web, tmp_path_factory):
    files = list_image_files(small_web.pool_dir)[:60] + list_image_files(small_web.bad_dir)
    return write_encoded_shards(files, tmp_path_factory.mktemp("encoded"), rows_per_shard=20)


def _embed(engine, spec, shards, root):
    stage_dir = RunDir(root).stage("embed_sscd")
    stats = run_stage(spec, shards, stage_dir, engine)
    assert stats["engine"] == engine.name
    return pq.read_table(stage_dir.outputs()).sort_by("key")


@pytest.fixture(scope="module")
def local_output(config, shards, tmp_path_factory):
    with get_engine("local", progress=False) as engine:
        output = _embed(engine, embed_stage_spec(config), shards, tmp_path_factory.mktemp("local"))
    assert output.num_rows > 50
    return output


def _assert_same_embeddings(got, want):
    assert got.column("key").equals(want.column("key"))
    assert got.column("model_id").equals(want.column("model_id"))
    a = want.column("embedding").combine_chunks().flatten().to_numpy()
    b = got.column("embedding").combine_chunks().flatten().to_numpy()
    np.testing.assert_allclose(b, a, atol=1e-6)


@pytest.mark.parametrize("decode_backend", ["thread", "process"])
def test_ray_matches_local(ray_runtime, config, shards, local_output, tmp_path, decode_backend):
    # "process": each Ray actor starts its own decode process, as on a GPU node.
    spec = embed_stage_spec(dataclasses.replace(config, decode_backend=decode_backend))
    engine = get_engine("ray", num_workers=2)
    try:
        ray_output = _embed(engine, spec, shards, tmp_path)
    finally:
        engine.close()
    _assert_same_embeddings(ray_output, local_output)


def test_spark_matches_local(spark_session, config, shards, local_output, tmp_path):
    with get_engine("spark") as engine:
        spark_output = _embed(engine, embed_stage_spec(config), shards, tmp_path)
    _assert_same_embeddings(spark_output, local_output)
