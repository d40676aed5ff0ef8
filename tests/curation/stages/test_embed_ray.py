"""The embed stage under Ray (actor pool) gives the same embeddings as the local engine."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curation.engines import get_engine
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.sources import list_image_files, write_encoded_shards
from curation.stages.embed import EmbedConfig, embed_stage_spec


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    torch.manual_seed(0)
    path = save_descriptor_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        build_descriptor("resnet18", dim=16, width=8),
        arch="resnet18",
        dim=16,
        arch_kwargs={"width": 8},
        inference={"size": 32, "resize": "square"},
    )
    config = EmbedConfig(
        model="descriptor",
        checkpoint=path,
        input="encoded_image",
        device="cpu",
        batch_size=16,
        num_workers=1,  # one decode process forked from each Ray actor
        threads=1,
    )
    return embed_stage_spec(config)


@pytest.fixture(scope="module")
def shards(small_web, tmp_path_factory):
    files = list_image_files(small_web.pool_dir)[:60] + list_image_files(small_web.bad_dir)
    return write_encoded_shards(files, tmp_path_factory.mktemp("encoded"), rows_per_shard=20)


def _embed(engine, spec, shards, root):
    stage_dir = RunDir(root).stage("embed_sscd")
    run_stage(spec, shards, stage_dir, engine)
    return pq.read_table(stage_dir.outputs()).sort_by("key")


def test_ray_matches_local(ray_runtime, spec, shards, tmp_path):
    with get_engine("local", progress=False) as engine:
        local = _embed(engine, spec, shards, tmp_path / "local")
    engine = get_engine("ray", num_workers=2)
    ray_output = _embed(engine, spec, shards, tmp_path / "ray")
    engine.close()
    assert ray_output.column("key").equals(local.column("key"))
    assert ray_output.column("model_id").equals(local.column("model_id"))
    a = local.column("embedding").combine_chunks().flatten().to_numpy()
    b = ray_output.column("embedding").combine_chunks().flatten().to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert local.num_rows > 50
