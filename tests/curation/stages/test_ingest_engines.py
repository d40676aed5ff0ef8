"""Ingest with exact and near-exact dedup gives the ground truth's numbers and keys on every engine
(the ground truth: ``tests/dedup_truth.py``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.ingest import run_ingest
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.rundir import RunDir
from curation.runner import TABLE_OUTPUT
from tests.dedup_truth import (
    SMALL_WEB_ALSO_CAUGHT,
    check_dedup,
    expected_dedup,
    ok_synth_keys,
)


@pytest.fixture(scope="module")
def pool_shards(small_web, tmp_path_factory):
    files = list_image_files(small_web.pool_dir)
    return write_encoded_shards(files, tmp_path_factory.mktemp("encoded"), rows_per_shard=40)


def _ingest(engine, shards, root) -> RunDir:
    cfg = CurationConfig(name="pool", runs_dir=root)
    run_ingest(cfg, engine, shards)
    return cfg.run_dir


@pytest.fixture(scope="module")
def local_run(pool_shards, tmp_path_factory):
    with get_engine("local", progress=False) as engine:
        return _ingest(engine, pool_shards, tmp_path_factory.mktemp("local"))


def _tables(run: RunDir) -> dict[str, pa.Table]:
    """Every ingest and dedup output of a run, rows in key order."""
    tables = {
        name: pq.read_table(run.stage(name).outputs()).sort_by("key")
        for name in ("ingest", "phash", "unique_images")
    }
    for name in ("dedup_exact", "dedup_near"):
        tables[name] = pq.read_table(run.stage(name).path / TABLE_OUTPUT).sort_by("key")
    return tables


def test_local_dedup_is_the_ground_truth(small_web, local_run):
    synth_keys = ok_synth_keys(local_run)
    assert len(synth_keys) == small_web.config.n_served_pool  # every pool file decodes
    expected = expected_dedup(small_web.read("pool"), synth_keys, SMALL_WEB_ALSO_CAUGHT)
    # 6 byte copies; 8 re-encodes and 0.8 resizes + the 5 named copies; 150 - 6 - 13 kept.
    assert (expected.exact_dropped, expected.near_dropped) == (6, 13)
    assert len(expected.unique_keys) == 131
    check_dedup(local_run, expected)


@pytest.mark.parametrize("engine_name", ["ray", "spark"])
def test_engines_give_the_local_dedup(
    engine_name, request, small_web, pool_shards, local_run, tmp_path
):
    # The runtimes are session fixtures: requested by name so one test covers both engines.
    request.getfixturevalue("ray_runtime" if engine_name == "ray" else "spark_session")
    options = {"num_workers": 2} if engine_name == "ray" else {}
    engine = get_engine(engine_name, **options)
    try:
        run = _ingest(engine, pool_shards, tmp_path)
    finally:
        engine.close()  # the session's runtime stays up: the fixture owns it
    assert run.stage("phash").read_stats()["engine"] == engine_name
    assert run.stage("unique_images").read_stats()["engine"] == engine_name
    got, want = _tables(run), _tables(local_run)
    for name in want:
        assert got[name].equals(want[name]), f"{name} differs between {engine_name} and local"
    # The same numbers and keys as the ground truth, not only as the local run.
    expected = expected_dedup(small_web.read("pool"), ok_synth_keys(run), SMALL_WEB_ALSO_CAUGHT)
    check_dedup(run, expected)
