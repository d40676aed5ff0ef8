"""The Ray job entry point runs the curation stages on Ray and resumes on resubmission."""

import json

from curation.rundir import RunDir
from curation.synth import SynthWebServer, write_url_list
from jobs.curate_ray import main
from tests.dedup_truth import (
    SMALL_WEB_ALSO_CAUGHT,
    check_dedup,
    expected_dedup,
    ok_synth_keys,
)


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
        run = RunDir(tmp_path / "runs" / "job")
        for stage in ("ingest", "phash", "unique_images"):
            assert run.stage(stage).read_stats()["engine"] == "ray", stage
        # Exactly the ground truth's dedup, as under the local engine
        # (tests/curation/stages/test_ingest_engines.py): 6 byte copies, 13 near copies.
        expected = expected_dedup(small_web.read("pool"), ok_synth_keys(run), SMALL_WEB_ALSO_CAUGHT)
        assert (expected.exact_dropped, expected.near_dropped) == (6, 13)
        assert len(expected.unique_keys) == served - 6 - 13
        check_dedup(run, expected)
        # A resubmission finds every stage complete and changes nothing.
        before = sorted(p.stat().st_mtime_ns for p in run.root.rglob("*.parquet"))
        assert main(args) == 0
        after = sorted(p.stat().st_mtime_ns for p in run.root.rglob("*.parquet"))
        assert after == before


def test_ray_job_needs_a_url_list(tmp_path, capsys):
    assert main([f"runs_dir={tmp_path}"]) == 2
    assert "download.url_list is required" in capsys.readouterr().err
