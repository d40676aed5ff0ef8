"""The same stage under local, Ray and Spark gives identical output tables on the synthetic web."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.engines import get_engine
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.decode import DecodeStage


@pytest.fixture(scope="module")
def encoded_shards(small_web, tmp_path_factory):
    files = list_image_files(small_web.pool_dir) + list_image_files(small_web.bad_dir)
    return write_encoded_shards(files, tmp_path_factory.mktemp("encoded"), rows_per_shard=40)


def _run(engine, shards, root) -> pa.Table:
    stage_dir = RunDir(root).stage("decode")
    stats = run_stage(StageSpec(DecodeStage), shards, stage_dir, engine)
    assert stats["shards"] == len(shards)
    assert stats["engine"] == engine.name
    return pq.read_table(stage_dir.outputs()).sort_by("key")


@pytest.fixture(scope="module")
def local_output(encoded_shards, tmp_path_factory):
    with get_engine("local", progress=False) as engine:
        return _run(engine, encoded_shards, tmp_path_factory.mktemp("local"))


def test_local_output_covers_every_input_once(local_output, encoded_shards, small_web):
    inputs = pq.read_table(encoded_shards, columns=["key"]).column("key").to_pylist()
    keys = local_output.column("key").to_pylist()
    assert sorted(keys) == sorted(inputs)
    assert len(set(keys)) == len(keys)
    statuses = dict(zip(keys, local_output.column("status").to_pylist()))
    bad = small_web.read("bad").to_pylist()
    assert any(row["expected"] != "ok" for row in bad)
    for row in bad:
        stem = row["file"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        assert (statuses[stem] == "ok") == row["expected"].startswith("ok"), row


def test_ray_matches_local(ray_runtime, encoded_shards, local_output, tmp_path):
    engine = get_engine("ray", num_workers=2)
    ray_output = _run(engine, encoded_shards, tmp_path)
    engine.close()  # the runtime belongs to the fixture, so this must not shut Ray down
    assert ray_runtime.is_initialized()
    assert ray_output.equals(local_output)


def test_spark_matches_local(spark_session, encoded_shards, local_output, tmp_path):
    with get_engine("spark") as engine:
        spark_output = _run(engine, encoded_shards, tmp_path)
    assert not spark_session.sparkContext._jsc.sc().isStopped()
    assert spark_output.equals(local_output)
