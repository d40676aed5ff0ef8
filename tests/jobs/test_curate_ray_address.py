"""Under ``ray job submit`` (RAY_ADDRESS set) the Ray job joins that cluster: ``ray_address=auto``."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jobs.curate_ray
from jobs.curate_ray import main


class _EngineBuilt(Exception):
    """Stops the job once it has chosen its engine."""


@pytest.fixture
def engine_configs(monkeypatch) -> list:
    """The engine configs the job builds its engine from (the job stops right there)."""
    built = []

    def capture(config):
        built.append(config)
        raise _EngineBuilt

    monkeypatch.setattr(jobs.curate_ray, "build_engine", capture)
    return built


@pytest.mark.parametrize(
    ("environment", "overrides", "address"),
    [
        ({"RAY_ADDRESS": "10.0.0.5:6379"}, [], "auto"),
        ({}, [], None),  # no cluster given: the job starts a local Ray
        # An address given in the config wins over the environment.
        (
            {"RAY_ADDRESS": "10.0.0.5:6379"},
            ["engine.ray_address=ray://head:10001"],
            "ray://head:10001",
        ),
    ],
)
def test_ray_address_follows_the_submission(
    environment, overrides, address, engine_configs, monkeypatch, tmp_path
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    urls = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://example.com/a.jpg"]}), urls)
    args = [f"runs_dir={tmp_path / 'runs'}", f"download.url_list={urls}", *overrides]
    with pytest.raises(_EngineBuilt):
        main(args)
    (config,) = engine_configs
    assert config.name == "ray"
    assert config.ray_address == address
