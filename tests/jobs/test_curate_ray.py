"""The Ray job entry point runs the curation stages on Ray and resumes on resubmission."""

import json

import pyarrow.parquet as pq

from curation.synth import SynthWebServer, write_url_list
from jobs.curate_ray import main


def test_ray_job_downloads_ingests_and_dedups(ray_runtime, small_web, tmp_path, capsys):
    with SynthWebServer(small_web.root) as server:
        urls = tmp_path / "urls.parquet"
        write_url_list(small_web, server.base_url, urls, include_bad=False, slow=False)
        args = [
            f"runs_dir={tmp_path / 'runs'}",
            "name=job",
            f"download.url_list={urls}",
            "download.allow_private_networks=true",
            "download.number_sample_per_shard=50",
            "download.thread_count=8",
        ]
        assert main(args) == 0
        out = capsys.readouterr().out
        stats = json.loads(out[out.index("\n{") :])  # Ray logs progress to stdout before it
        assert stats["download"]["engine"] == "ray"
        served = small_web.config.n_served_pool
        assert stats["download"]["status_success"] == served
        unique = pq.read_table(
            list((tmp_path / "runs" / "job" / "unique_images").glob("*.parquet"))
        )
        # Exact copies are gone; every original survives.
        pool = small_web.read("pool")
        originals = sum(kind == "original" for kind in pool.column("kind").to_pylist())
        assert originals <= unique.num_rows <= served - small_web.config.n_exact_duplicates
        # A resubmission finds every stage complete and changes nothing.
        before = sorted(
            p.stat().st_mtime_ns for p in (tmp_path / "runs" / "job").rglob("*.parquet")
        )
        assert main(args) == 0
        after = sorted(p.stat().st_mtime_ns for p in (tmp_path / "runs" / "job").rglob("*.parquet"))
        assert after == before


def test_ray_job_needs_a_url_list(tmp_path, capsys):
    assert main([f"runs_dir={tmp_path}"]) == 2
    assert "download.url_list is required" in capsys.readouterr().err
