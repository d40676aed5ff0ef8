"""Download through img2dataset's ``pyspark`` distributor (the Spark engine) gives what the local
engine (``multiprocessing``) gives: the same keys, URLs, statuses and bytes."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.download import downloaded_sample_shards, run_download
from curation.synth import SynthWebServer

COLUMNS = ("key", "url", "status", "error_message", "sha256")


def _config(tmp_path, name: str) -> CurationConfig:
    cfg = CurationConfig(name=name, runs_dir=tmp_path)
    return replace(
        cfg,
        download=replace(
            cfg.download,
            url_list=str(tmp_path / "urls.parquet"),
            allow_private_networks=True,
            number_sample_per_shard=6,
            processes_count=2,
            thread_count=4,
            timeout=60,
        ),
    )


def _rows(cfg: CurationConfig) -> list[tuple]:
    samples = pq.read_table(downloaded_sample_shards(cfg))
    return sorted(zip(*(samples[c].to_pylist() for c in COLUMNS)))


def test_download_on_spark_matches_the_local_engine(small_web, tmp_path, spark_session):
    pool = small_web.read("pool").to_pylist()[:14]
    with SynthWebServer(small_web.root) as server:
        urls = [server.url_for(r["file"]) for r in pool]
        truth = dict(zip(urls, (r["sha256"] for r in pool)))
        urls += [server.url_for("images/nowhere.jpg", route="missing")]  # a 404, as a failure
        pq.write_table(pa.table({"url": urls}), tmp_path / "urls.parquet")
        local_cfg, spark_cfg = _config(tmp_path, "local"), _config(tmp_path, "spark")
        local = run_download(local_cfg, get_engine("local", progress=False))
        engine = get_engine("spark", master="local[2]")
        try:
            on_spark = run_download(spark_cfg, engine)
        finally:
            engine.close()  # the shared session stays up: the engine did not start it
    assert on_spark["distributor"] == "pyspark" and local["distributor"] == "multiprocessing"
    rows = _rows(spark_cfg)
    assert rows == _rows(local_cfg)
    assert sorted(r[1] for r in rows) == sorted(urls)
    for _, url, status, error, sha256 in rows:
        if url in truth:
            assert (status, sha256) == ("success", truth[url])
        else:
            assert (status, error) == ("failed_to_download", "HTTP Error 404: Not Found")
    assert not spark_session.sparkContext._jsc.sc().isStopped()
