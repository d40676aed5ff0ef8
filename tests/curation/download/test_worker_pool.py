"""Download workers forked from a preloaded forkserver instead of spawned (issue 16: a spawned
worker imports img2dataset, 3.5 s of CPU, and img2dataset replaces each worker after 5 shards)."""

from __future__ import annotations

import json
import multiprocessing
import os
from multiprocessing import forkserver

import pytest

from curation.download import worker_pool
from tests.worker_probe import probe

pytestmark = pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no forkserver here"
)


def fetch(folder, shards: int = 6) -> list[dict]:
    """Run the distributor over ``shards`` probe shards; what each shard's worker saw."""
    folder.mkdir()
    rows = iter([(i, str(folder)) for i in range(shards)])
    worker_pool.multiprocessing_distributor(2, probe, rows, None, 0)
    return [json.loads((folder / f"{i}.json").read_text()) for i in range(shards)]


def test_workers_are_forked_from_a_preloaded_server_that_stops_with_the_call(tmp_path):
    seen = fetch(tmp_path / "a", shards=2 * worker_pool.TASKS_PER_WORKER + 1)  # replaced workers
    assert all(s["preloaded"] for s in seen)
    assert all(s["parent"] != os.getpid() for s in seen)  # children of the forkserver
    assert forkserver._forkserver._forkserver_pid is None  # stopped with the call
    assert forkserver._forkserver._preload_modules == worker_pool.DEFAULT_PRELOAD


def test_each_call_carries_its_own_decode_limit(tmp_path, monkeypatch):
    """OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS when imported (in the server, for forked
    workers): each call's server starts with that call's limit."""
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "1000")  # below the probe's 2,000 pixels
    assert not any(s["decoded"] for s in fetch(tmp_path / "small"))
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "100000")
    assert all(s["decoded"] for s in fetch(tmp_path / "large"))


def test_a_forkserver_started_elsewhere_is_left_alone(tmp_path):
    """Its imports and environment are unknown: the workers are spawned, as img2dataset does."""
    context = multiprocessing.get_context("forkserver")
    with context.Pool(1) as other:
        assert other.apply(os.getpid) > 0
    running = forkserver._forkserver._forkserver_pid
    assert running is not None
    try:
        seen = fetch(tmp_path / "spawned")
        assert not any(s["preloaded"] for s in seen)
        assert all(s["parent"] == os.getpid() for s in seen)
        assert forkserver._forkserver._forkserver_pid == running  # not stopped by us
    finally:
        forkserver._forkserver._stop()
