"""Session-wide fixtures: a small synthetic web, and one Ray / Spark runtime shared by all tests.

Required components never skip silently under CI: with ``CI`` set (``CI=true``, as CI services
set it), a missing or broken ray / pyspark / faiss / webdataset / img2dataset stops the run before
any test, naming the package and the install command. Locally, tests that need an optional engine
skip through :func:`require_module` (the ``require`` fixture in test files: ``require("pyspark")``
instead of ``pytest.importorskip``). Only GPU tests may skip under CI.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from curation.synth import SynthConfig, generate_synthetic_web

# img2dataset imports albumentations, which otherwise asks PyPI for a newer version on import
# (seconds of waiting on a machine without internet).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

INSTALL_HINT = "pip install -e '.[ray,spark,dev]'"
# Import name -> what provides it (an extra of this package, or a core dependency).
REQUIRED_UNDER_CI = {
    "ray": "the [ray] extra",
    "pyspark": "the [spark] extra",
    "faiss": "a core dependency (faiss-cpu)",
    "webdataset": "the [dev] extra",
    "datasets": "the [dev] extra (Hugging Face datasets: reads the Parquet shards back)",
    "img2dataset": "a core dependency",
    "skimage": "the [dev] extra (scikit-image: the real pictures of the copy-detection tests)",
    "onnxruntime": "the [safety] / [dev] extras (runs the NSFW detector)",
    "nudenet": "the [safety] / [dev] extras (ships the NSFW detector's model file)",
    "dlib": "the [safety] / [dev] extras (dlib-bin: the default face detector)",
    "moto": "the [dev] extra (moto[server]: the local S3 server of the object-storage tests)",
    "s3fs": "the [s3] / [dev] extras (img2dataset writes downloads to the S3 server with it)",
    "websocket": "the [dev] extra (websocket-client: drives headless Chromium in the report test)",
}

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


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _import_error(name: str) -> str | None:
    """Why ``import name`` fails (the first line of the error), or None if it imports."""
    try:
        importlib.import_module(name)
    except Exception as exc:  # a broken install may raise more than ImportError
        first_line = (str(exc).splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first_line}"
    return None


def require_module(name: str) -> ModuleType:
    """Import a required test dependency: skip the test locally when it is missing, fail under CI
    (where the session-start check should already have stopped the run)."""
    problem = _import_error(name)
    if problem is None:
        return importlib.import_module(name)
    message = f"{name} is not importable ({problem}); install it with {INSTALL_HINT}"
    if running_under_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    if not running_under_ci():
        return
    missing = {
        name: problem for name in REQUIRED_UNDER_CI if (problem := _import_error(name)) is not None
    }
    if missing:
        lines = [f"  {name} ({REQUIRED_UNDER_CI[name]}): {why}" for name, why in missing.items()]
        raise pytest.UsageError(
            "CI is set, so required test components may not be skipped, but these do not "
            "import:\n" + "\n".join(lines) + f"\nInstall them with: {INSTALL_HINT}"
        )


@pytest.fixture(scope="session")
def require():
    """``require("pyspark")`` imports a required test dependency: skips locally, fails under CI."""
    return require_module


@pytest.fixture(scope="session")
def small_web(tmp_path_factory):
    """A ~150-image synthetic web with bad files and ground truth (generated once per session)."""
    return generate_synthetic_web(
        tmp_path_factory.mktemp("web") / "synth", SMALL_WEB, progress=False
    )


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray instance with the CI machine's 2 CPUs, shared by every Ray test."""
    ray = require_module("ray")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def spark_session():
    """One local Spark session for the whole test run (JVM start-up is the slow part)."""
    require_module("pyspark")
    from curation.engines.spark import get_spark_session

    spark = get_spark_session("local[2]", app_name="lvd-tests")
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()
