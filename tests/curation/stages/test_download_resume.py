"""A download whose driver is SIGKILLed halfway, rerun, ends with the keys of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.synth import SynthWebServer

PER_SHARD = 10
N_SHARDS = 6


@pytest.fixture(scope="module")
def slow_list(small_web, tmp_path_factory):
    """60 pool images, one per shard served slowly (0.5 s), so no shard is instant."""
    root = tmp_path_factory.mktemp("resume")
    files = small_web.read("pool").column("file").to_pylist()[: PER_SHARD * N_SHARDS]
    with SynthWebServer(small_web.root, slow_seconds=0.5) as server:
        urls = [
            server.url_for(f, route="slow" if i % PER_SHARD == 0 else None)
            for i, f in enumerate(files)
        ]
        pq.write_table(pa.table({"url": urls}), root / "urls.parquet")
        yield root, server


def _args(root: Path, name: str, processes: int) -> list[str]:
    return [
        "download",
        "--url-list",
        str(root / "urls.parquet"),
        "--allow-private-networks",
        "--run",
        name,
        f"runs_dir={root}",
        f"download.number_sample_per_shard={PER_SHARD}",
        f"download.processes_count={processes}",
        "download.thread_count=4",
        "download.timeout=10",
    ]


def _final(root: Path, name: str) -> list[tuple]:
    samples = pq.read_table(sorted((root / name / "download" / "samples").glob("*.parquet")))
    return sorted(zip(*(samples[c].to_pylist() for c in ("key", "url", "status", "sha256"))))


def _tar_members(root: Path, name: str) -> list[str]:
    import tarfile

    members = []
    for tar in sorted((root / name / "download" / "raw").glob("*.tar")):
        with tarfile.open(tar) as archive:
            members += [m.name for m in archive if m.name.endswith(".jpg")]
    return members


def _group(pgid: int) -> list[str]:
    listed = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return listed.stdout.split()


def test_sigkill_then_rerun_matches_an_uninterrupted_run(slow_list):
    root, _ = slow_list
    raw = root / "killed" / "download" / "raw"
    command = [sys.executable, "-m", "curation.cli", *_args(root, "killed", processes=2)]
    # A session of its own, so that whatever it leaves behind can be found (and cleaned up).
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(raw.glob("*_stats.json"))) < 2:
            assert process.poll() is None, "the download ended before it could be killed"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)  # the driver only: its workers are orphaned
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        finished = len(list(raw.glob("*_stats.json")))
        assert finished < N_SHARDS, "killed too late to test a resume"
        assert not (root / "killed" / "download" / "_SUCCESS").exists()

        # The same command resumes (it waits for orphan workers still finishing a shard).
        assert main(_args(root, "killed", processes=2)) == 0
        assert main(_args(root, "straight", processes=2)) == 0  # an uninterrupted run

        resumed, straight = _final(root, "killed"), _final(root, "straight")
        assert resumed == straight
        assert len(resumed) == PER_SHARD * N_SHARDS
        assert {status for _, _, status, _ in resumed} == {"success"}
        members = _tar_members(root, "killed")
        assert len(members) == len(set(members)) == PER_SHARD * N_SHARDS
        # Nothing of the killed run lingers: workers end after their shard, the logger dies.
        deadline = time.monotonic() + 30
        while _group(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _group(process.pid) == []
    finally:
        for pid in _group(process.pid):
            os.kill(int(pid), signal.SIGKILL)
