"""A download SIGKILLed at named points (``LVD_KILL_AT``, see curation/download/kill_points.py),
then rerun: nothing of the killed run survives, the rerun does only the work left (requests served,
raw shards written, conversion markers created are counted), and the result is the one an
uninterrupted run gives (every URL's key, status and bytes, from the synthetic web's ground truth).

Chains of runs on one URL list, each step started from the state the previous one left:

- ``a``: killed as img2dataset's progress logger starts (nothing fetched yet; the logger is still
  importing, the window in which it used to be orphaned for good), then killed after img2dataset
  returned (everything fetched, the final conversion not run), then completed;
- ``b``: killed at its first shard conversion, while fetching (each shard has a slow URL), then
  completed;
- ``--retry-failed`` on ``a`` (its flaky URLs failed): killed after the retry's fetch, then after
  its first merged part, then completed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.download.config import DownloadLayout
from curation.download.kill_points import KILL_AT
from curation.download.plan import load_plan, sample_key
from curation.download.shards import finished_shards
from curation.synth import SynthWebServer

pytestmark = pytest.mark.timeout(900)  # eight downloads, each spawning img2dataset's processes

PER_SHARD = 4
N_SHARDS = 5
N_FLAKY = 3  # 503 on their first request: failed by the download, recovered by the retry
RUN_MARKER = "LVD_TEST_RUN"  # set in each killed run's environment, inherited by its processes
GONE_DEADLINE = 120.0  # generous: an orphan notices its parent's death after its imports


def _args(root: Path, name: str) -> list[str]:
    return [
        "download",
        "--url-list",
        str(root / f"{name}.parquet"),
        "--allow-private-networks",
        "--run",
        name,
        f"runs_dir={root}",
        f"download.number_sample_per_shard={PER_SHARD}",
        "download.processes_count=2",
        "download.thread_count=4",
        "download.timeout=60",
    ]


def _retry_args(root: Path, name: str) -> list[str]:
    return ["download", "--retry-failed", name, f"runs_dir={root}", "download.timeout=60"]


def _run_processes(pgid: int, marker: str) -> list[str]:
    """Live processes of a run: in its process group, or carrying its environment marker (which
    also finds one that left the group). Zombies are dead already and not counted."""
    found = []
    needle = f"{RUN_MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if state == "Z":
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
            if int(pgrp) == pgid or needle in env:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name} (ppid {stat.rsplit(')', 1)[1].split()[1]}) {cmdline}")
        except (OSError, ValueError, IndexError):
            continue  # ended while we looked, or not ours to read
    return found


def _wait_until_gone(pgid: int, marker: str) -> list[str]:
    import time

    deadline = time.monotonic() + GONE_DEADLINE
    while (left := _run_processes(pgid, marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _kill_all(pgid: int, marker: str) -> None:
    for line in _run_processes(pgid, marker):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _counts(server: SynthWebServer) -> dict[str, int]:
    return server.request_counts


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {p: n - before.get(p, 0) for p, n in after.items() if n != before.get(p, 0)}


def _markers(layout: DownloadLayout) -> dict[str, int]:
    """Conversion marker name -> inode (a rewritten marker gets a new inode: temp, then rename)."""
    return {p.name: p.stat().st_ino for p in layout.markers.glob("*.json")}


def _shard_paths(layout: DownloadLayout, shards: set[int]) -> dict[str, int]:
    """URL path -> 1 for every URL of ``shards`` (each fetched once when its shard is fetched)."""
    plan = load_plan(layout.urls)
    paths = {}
    for shard_id in shards:
        for url in pq.read_table(plan.fetch_file(shard_id), columns=["url"])["url"].to_pylist():
            paths[urlsplit(url).path] = 1
    return paths


class Step:
    """One run of a chain and what it did: return code, requests served, raw shards finished,
    markers created or rewritten, and processes of the run still alive after it."""

    def __init__(self, root: Path, name: str, server: SynthWebServer, kill_at: str | None):
        self.layout = DownloadLayout(root / name / "download")
        self.kill_at = kill_at
        self.finished_before = self._finished()
        self.markers_before = _markers(self.layout)
        self.requests_before = _counts(server)
        self.survivors: list[str] = []

    def _finished(self) -> set[int]:
        if not self.layout.raw.is_dir():
            return set()
        return finished_shards(self.layout.raw, "webdataset", repair=False)

    def done(self, returncode: int, server: SynthWebServer) -> Step:
        self.returncode = returncode
        self.requests = _delta(_counts(server), self.requests_before)
        self.shards_written = self._finished() - self.finished_before
        after = _markers(self.layout)
        self.markers_written = {
            m for m, inode in after.items() if self.markers_before.get(m) != inode
        }
        return self


def _killed(root: Path, name: str, server, kill_at: str, args: list[str]) -> Step:
    """Run ``lvd`` in a session of its own with ``LVD_KILL_AT=kill_at``; wait for all of it."""
    step = Step(root, name, server, kill_at)
    marker = uuid.uuid4().hex
    env = {**os.environ, KILL_AT: kill_at, RUN_MARKER: marker, "NO_ALBUMENTATIONS_UPDATE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "curation.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        returncode = process.wait(timeout=600)
        step.survivors = _wait_until_gone(process.pid, marker)
    finally:
        _kill_all(process.pid, marker)
    return step.done(returncode, server)


def _completed(root: Path, name: str, server, args: list[str]) -> Step:
    step = Step(root, name, server, None)
    return step.done(main(args), server)


@pytest.fixture(scope="module")
def chains(small_web, tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    pool = small_web.read("pool").to_pylist()
    n = PER_SHARD * N_SHARDS
    with SynthWebServer(small_web.root, slow_seconds=1.0) as server:
        # a: plain and flaky URLs; b: one slow URL per shard, so its fetch outlasts one shard.
        flaky = set(range(2, n, n // N_FLAKY))
        a_urls = [
            server.url_for(r["file"], route="flaky" if i in flaky else None)
            for i, r in enumerate(pool[:n])
        ]
        b_urls = [
            server.url_for(r["file"], route="slow" if i % PER_SHARD == 1 else None)
            for i, r in enumerate(pool[n : 2 * n])
        ]
        pq.write_table(pa.table({"url": a_urls}), root / "a.parquet")
        pq.write_table(pa.table({"url": b_urls}), root / "b.parquet")
        steps = {
            "a1": _killed(root, "a", server, "logger_started", _args(root, "a")),
            "a2": _killed(root, "a", server, "img2dataset_done", _args(root, "a")),
            "a3": _completed(root, "a", server, _args(root, "a")),
            "b1": _killed(root, "b", server, "shard_converted", _args(root, "b")),
            "b2": _completed(root, "b", server, _args(root, "b")),
        }
        a_after_download = _samples(root / "a")
        steps["r1"] = _killed(root, "a", server, "img2dataset_done", _retry_args(root, "a"))
        steps["r2"] = _killed(root, "a", server, "retry_part_merged", _retry_args(root, "a"))
        steps["r3"] = _completed(root, "a", server, _retry_args(root, "a"))
        yield {
            "root": root,
            "steps": steps,
            "truth": {r["file"]: r["sha256"] for r in pool},
            "urls": {"a": a_urls, "b": b_urls},
            "flaky": [a_urls[i] for i in sorted(flaky)],
            "a_after_download": a_after_download,
        }


def _samples(run: Path) -> dict[str, dict]:
    layout = DownloadLayout(run / "download")
    return {row["url"]: row for row in pq.read_table(layout.sample_parts()).to_pylist()}


def _file(url: str) -> str:
    path = urlsplit(url).path.lstrip("/")
    return path.split("/", 1)[1] if path.startswith(("flaky/", "slow/")) else path


def test_every_kill_happened_and_left_no_process_of_the_run_behind(chains):
    for name, step in chains["steps"].items():
        if step.kill_at is None:
            assert step.returncode == 0, name
            continue
        assert step.returncode == -signal.SIGKILL, f"{name}: {step.kill_at} was never reached"
        assert step.survivors == [], f"{name} (killed at {step.kill_at}) left {step.survivors}"


def test_a_rerun_fetches_only_the_shards_left_unfinished(chains):
    steps = chains["steps"]
    for name in ("a2", "a3", "b2"):
        step = steps[name]
        left = set(range(N_SHARDS)) - step.finished_before
        assert step.shards_written == left, name  # orphans of a killed step finished theirs
    # Killed before img2dataset fetched anything; a2 then fetched every URL once, a3 none.
    assert steps["a1"].requests == {} and steps["a1"].shards_written == set()
    layout = steps["a2"].layout
    assert steps["a2"].requests == _shard_paths(layout, set(range(N_SHARDS)))
    assert steps["a3"].requests == {}
    # b was killed while fetching: its rerun asks for the URLs of the unfinished shards only.
    b2 = steps["b2"]
    assert b2.requests == _shard_paths(b2.layout, set(range(N_SHARDS)) - b2.finished_before)
    # Across the killed run and its rerun, every URL of b was requested exactly once.
    total = {p: steps["b1"].requests.get(p, 0) + b2.requests.get(p, 0) for p in b2.requests}
    total |= {p: n for p, n in steps["b1"].requests.items() if p not in b2.requests}
    assert total == {urlsplit(u).path: 1 for u in chains["urls"]["b"]}


def test_a_rerun_converts_only_the_shards_left_unconverted(chains):
    steps = chains["steps"]
    every = {f"part-{i:05d}.json" for i in range(N_SHARDS)}
    for name in ("a3", "b2"):
        step = steps[name]
        assert step.markers_written == every - set(step.markers_before), name
        assert set(_markers(step.layout)) == every
    # a2 was killed before its final pass; b1 at its first conversion, before that marker.
    assert steps["b1"].markers_written == set()


def test_the_resumed_download_ends_as_an_uninterrupted_one(chains):
    truth = chains["truth"]
    flaky = set(chains["flaky"])
    for name in ("a", "b"):
        run = chains["root"] / name
        samples = chains["a_after_download"] if name == "a" else _samples(run)
        urls = chains["urls"][name]
        assert sorted(samples) == sorted(urls)
        keys = [row["key"] for row in samples.values()]
        assert sorted(keys) == sorted(
            sample_key(s, i, PER_SHARD) for s in range(N_SHARDS) for i in range(PER_SHARD)
        )
        for url, row in samples.items():
            if url in flaky:
                assert (row["status"], row["error_message"]) == (
                    "failed_to_download",
                    "HTTP Error 503: Service Unavailable",
                )
            else:
                assert (row["status"], row["sha256"]) == ("success", truth[_file(url)]), url
        layout = DownloadLayout(run / "download")
        members = []
        for tar in sorted(layout.raw.glob("*.tar")):
            with tarfile.open(tar) as archive:
                members += [m.name for m in archive if m.name.endswith(".jpg")]
        assert len(members) == len(set(members)) == len(urls) - (len(flaky) if name == "a" else 0)
        stats = json.loads(next(layout.root.glob("*stats.json")).read_text())
        assert stats["rows_in"] == len(urls)


def test_a_killed_retry_resumes_without_refetching_and_merges_once(chains):
    steps, root, truth = chains["steps"], chains["root"], chains["truth"]
    flaky_paths = {urlsplit(u).path: 1 for u in chains["flaky"]}
    # The retry's fetch (r1) asked for the failed URLs once; its resumptions asked for nothing.
    assert steps["r1"].requests == flaky_paths
    assert steps["r2"].requests == {} and steps["r3"].requests == {}
    before = chains["a_after_download"]
    after = _samples(root / "a")
    assert {u: r["key"] for u, r in after.items()} == {u: r["key"] for u, r in before.items()}
    for url, row in after.items():
        assert (row["status"], row["sha256"]) == ("success", truth[_file(url)]), url
    # A webdataset reader over every tar, merged retries included, sees each key once.
    tars = sorted({row["source_file"] for row in after.values()})
    seen = []
    for tar in tars:
        with tarfile.open(tar) as archive:
            seen += [m.name for m in archive if m.name.endswith(".jpg")]
    assert sorted(seen) == sorted(f"{row['key']}.jpg" for row in after.values())
    stats = json.loads(next((root / "a" / "download").glob("*stats.json")).read_text())
    assert [r["recovered"] for r in stats["retries"]] == [N_FLAKY]
