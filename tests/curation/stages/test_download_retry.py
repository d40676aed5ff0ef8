"""`lvd download --retry-failed RUN` recovers failed good URLs and merges them under their keys."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cli import main
from curation.download.config import DownloadLayout
from curation.synth import SynthWebServer
from curation.synth.urls import build_url_list


def _samples(run):
    return pq.read_table(DownloadLayout(run / "download").sample_parts()).to_pylist()


def _stats(stage_dir):
    """A stage's stats (``_stats.json``; ``stats.json`` in run folders of the older layout)."""
    path = stage_dir / "_stats.json"
    return json.loads((path if path.is_file() else stage_dir / "stats.json").read_text())


def test_retry_failed_recovers_and_merges_without_duplicates(small_web, tmp_path):
    import webdataset as wds

    with (
        SynthWebServer(small_web.root) as flaky,  # 503 on the first request of each /flaky/ URL
        SynthWebServer(small_web.root) as outage,  # down during the first run
    ):
        table = build_url_list(small_web, flaky, include_bad=False, slow=False, flaky=True)
        expected = table.column("expected").to_pylist()
        keep = [i for i, e in enumerate(expected) if e != "ok" or i < 12]
        first = table.take(keep).select(["url", "expected"])
        pool = small_web.read("pool").column("file").to_pylist()[-16:]
        second = pa.table({"url": [outage.url_for(f) for f in pool], "expected": ["ok"] * 16})
        second = second.cast(first.schema)
        urls = pa.concat_tables([first, second])
        pq.write_table(urls, tmp_path / "urls.parquet")
        outage.set_down(True)
        run_args = [
            f"runs_dir={tmp_path}",
            "download.number_sample_per_shard=10",
            "download.processes_count=2",
            "download.thread_count=4",
            "download.timeout=30",
        ]
        assert (
            main(
                [
                    "download",
                    "--url-list",
                    str(tmp_path / "urls.parquet"),
                    "--allow-private-networks",
                    "--run",
                    "r",
                    *run_args,
                ]
            )
            == 0
        )
        before = {row["url"]: row for row in _samples(tmp_path / "r")}
        good = {
            u
            for u, e in zip(urls["url"].to_pylist(), urls["expected"].to_pylist())
            if e in ("ok", "flaky")
        }
        failed_good = {u for u in good if before[u]["status"] != "success"}
        assert len(failed_good) == 16 + 3  # the outage and the three flaky URLs
        outage.set_down(False)
        requests_before = {**flaky.request_counts, **outage.request_counts}
        assert main(["ingest", "--run", "r", f"runs_dir={tmp_path}"]) == 0
        ingested = _stats(tmp_path / "r" / "ingest")

        assert main(["download", "--retry-failed", "r", f"runs_dir={tmp_path}"]) == 0

        requests = {**flaky.request_counts, **outage.request_counts}
    after = {row["url"]: row for row in _samples(tmp_path / "r")}
    assert {u for u, row in after.items() if row["status"] == "success"} == good
    assert [row["key"] for row in before.values()] == [after[u]["key"] for u in before]
    keys = [row["key"] for row in after.values()]
    assert len(keys) == len(set(keys))
    # Only failures were requested again; successes of the first run were not.
    for url, row in before.items():
        if "refused" in url:  # nothing listens there: no server counts it
            continue
        path = url.split("/", 3)[3]
        again = requests.get("/" + path, 0) - requests_before.get("/" + path, 0)
        assert again == (0 if row["status"] == "success" else 1), url
    # A webdataset reader over every tar, merged retries included, sees each key once.
    tars = sorted({row["source_file"] for row in after.values() if row["source_file"]})
    assert any("retries" in t for t in tars)
    seen = {}
    for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
        assert sample["__key__"] not in seen
        seen[sample["__key__"]] = hashlib.sha256(sample["jpg"]).hexdigest()
        assert json.loads(sample["json"])["key"] == sample["__key__"]
    assert seen == {r["key"]: r["sha256"] for r in after.values() if r["status"] == "success"}
    stats = _stats(tmp_path / "r" / "download")
    assert stats["status_success"] == len(good)
    assert stats["retries"][0]["recovered"] == len(failed_good)
    # The merge made ingest stale for the changed shards: the next ingest picks the new images up.
    assert main(["ingest", "--run", "r", f"runs_dir={tmp_path}"]) == 0
    reingested = _stats(tmp_path / "r" / "ingest")
    assert reingested["status_ok"] == ingested["status_ok"] + len(failed_good)
    unique = _stats(tmp_path / "r" / "unique_images")
    assert unique["rows_out"] >= len(good) - 2  # a planted copy or two may be deduplicated
