"""Spark on object storage (issue 13): the ingest chain on the Spark engine (``local[2]``,
``mapInArrow``) with ``runs_dir=s3://...`` on a real S3-compatible server (moto) equals the same
chain on local disk. Spark reaches the store through pyarrow inside its tasks (no Hadoop S3A)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation import storage
from curation.engines.spark import SparkEngine
from curation.jobs.config import CurationConfig
from curation.jobs.ingest import run_ingest
from curation.readers.input_shards import index_webdataset_tars
from tests.curation.storage.conftest import BUCKET, S3_ENV
from tests.curation.storage.test_runs_on_s3 import (
    STAGES,
    TABLE_STAGES,
    _ingest,
    _tables,
    write_tars,
)


@pytest.fixture
def spark_on_store(spark_session, s3_server):
    """The session's executors given the store's credentials, as ``spark.executorEnv.*`` would on
    a cluster (a JVM started before the S3 server did not see them). The endpoint is not given:
    the engine hands it to its tasks itself."""
    environment = spark_session.sparkContext.environment
    saved = dict(environment)
    environment.update(S3_ENV)
    yield spark_session
    environment.clear()
    environment.update(saved)


def test_ingest_chain_on_spark_and_s3_equals_local(spark_on_store, tmp_path):
    write_tars(tmp_path / "tars")
    shards = index_webdataset_tars(sorted((tmp_path / "tars").glob("*.tar")), tmp_path / "index")
    local = _ingest("local", str(tmp_path / "runs"), shards)

    cfg = CurationConfig(name="pool", runs_dir=f"s3://{BUCKET}/spark-chain")
    engine = SparkEngine()
    assert engine.spark is spark_on_store
    run_ingest(cfg, engine, shards)
    run = cfg.run_dir
    assert isinstance(run.root, storage.ObjectPath)
    for name in STAGES:
        stats = run.stage(name).read_stats()
        assert stats["engine"] == "spark" and stats["shards"] == 3, name
    expected, found = _tables(local), _tables(run)
    assert found["unique_images"].num_rows == 15
    for name in (*STAGES, *TABLE_STAGES):
        assert found[name].equals(expected[name]), name
    assert not Path("s3:").exists()
