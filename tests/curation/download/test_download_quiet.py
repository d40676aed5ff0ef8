"""``lvd download`` on the synthetic web: one bar in rows on the terminal, img2dataset's own output
(its banner per URL shard, its per-shard statistics) in the run's log file."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.download.shard_progress import ShardStatsProgress
from curation.progress import ENVIRONMENT
from curation.synth import SynthWebServer
from curation.synth.urls import build_url_list

BANNER = "Downloading starting now"
URLS, PER_SHARD = 40, 10


@pytest.mark.timeout(120)
def test_the_download_shows_a_bar_in_rows_and_logs_img2dataset(
    small_web, tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv(ENVIRONMENT, "1")  # draw the bar although stderr is captured
    with SynthWebServer(small_web.root) as server:
        urls = build_url_list(small_web, server, include_bad=False, slow=False).slice(0, URLS)
        with open(tmp_path / "urls.jsonl", "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in urls.to_pylist())
        argv = ["download", "--url-list", str(tmp_path / "urls.jsonl"), "--allow-private-networks"]
        settings = [
            f"download.number_sample_per_shard={PER_SHARD}",
            "download.processes_count=2",
            "download.thread_count=4",
            "download.timeout=10",
        ]
        assert main([*argv, "--run", "quiet", f"runs_dir={tmp_path}", *settings]) == 0
    out, err = capfd.readouterr()  # file descriptors: the worker processes' output too
    assert json.loads(out)["rows_in"] == URLS  # the command's own output, untouched
    for chatter in (BANNER, "Starting the downloading", "Sharding file", "success: "):
        assert chatter not in out + err
    shards = URLS // PER_SHARD
    last = [frame.strip() for frame in err.split("\r") if "download:" in frame][-1]
    assert re.search(rf"100%.* {URLS}/{URLS} \[.*rows/s, {shards}/{shards} shards]", last), last
    assert "INFO curation.jobs.download: download of run quiet" in err  # lvd's own messages stay
    log = (tmp_path / "quiet" / "_logs" / "lvd.log").read_text()
    assert log.count(f"INFO img2dataset: {BANNER}") == shards  # once per URL shard
    # img2dataset's statistics, printed by its logger process: a worker's output is captured too.
    assert re.search(rf"total +- success: [\d.]+ .* count: {URLS}\n", log)


def test_the_download_bar_counts_shards_as_img2dataset_finishes_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENVIRONMENT, "1")
    urls, raw = tmp_path / "fetch", tmp_path / "raw"
    urls.mkdir()
    raw.mkdir()
    for shard in range(3):
        pq.write_table(pa.table({"url": ["u"] * 10}), urls / f"{shard:05d}.parquet")
    (raw / "00000_stats.json").write_text(json.dumps({"count": 10}))  # done by an earlier run
    with ShardStatsProgress(urls, raw, "download") as progress:
        (raw / "00001_stats.json").write_text('{"count": ')  # being written: counted later
        progress._update()
        assert progress.bar.rows == 10
        (raw / "00001_stats.json").write_text(json.dumps({"count": 10}))
        (raw / "00002_stats.json").write_text(json.dumps({"count": 7}))
    assert (progress.bar.rows, progress.bar.shards) == (27, 3)
    frames = [f.strip() for f in capsys.readouterr().err.split("\r") if f.strip()]
    assert "10/30" in frames[0] and "1/3 shards" in frames[0]
    assert "27/30" in frames[-1] and "3/3 shards" in frames[-1]


def test_the_download_bar_polls_nothing_off_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    with ShardStatsProgress(tmp_path / "missing", tmp_path / "missing", "download") as progress:
        pass
    assert progress.bar is None and not progress.is_alive() and progress.ident is None
