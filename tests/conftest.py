"""Session-wide fixtures: a small synthetic web, and one Ray / Spark runtime shared by all tests."""

from __future__ import annotations

import os

import pytest

from curation.synth import SynthConfig, generate_synthetic_web

SMALL_WEB = SynthConfig(
    seed=7,
    n_pool=120,
    n_classes=6,
    n_near_duplicates=20,
    n_exact_duplicates=6,
    n_seed_classes=2,
    n_seed_per_class=8,
    n_eval=16,
    n_eval_copies_in_pool=4,
)


@pytest.fixture(scope="session")
def small_web(tmp_path_factory):
    """A ~150-image synthetic web with bad files and ground truth (generated once per session)."""
    return generate_synthetic_web(
        tmp_path_factory.mktemp("web") / "synth", SMALL_WEB, progress=False
    )


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray instance with the CI machine's 2 CPUs, shared by every Ray test."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def spark_session():
    """One local Spark session for the whole test run (JVM start-up is the slow part)."""
    pytest.importorskip("pyspark")
    from curation.engines.spark import get_spark_session

    spark = get_spark_session("local[2]", app_name="lvd-tests")
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()
