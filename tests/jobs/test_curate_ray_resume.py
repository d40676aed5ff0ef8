"""A Ray job submission killed mid-run, then resubmitted, finishes with the result of an
uninterrupted run without redoing the stages that had finished; with ``embed.checkpoint`` set it
also embeds the unique images (with a descriptor from a short training run)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.embed import run_embed
from curation.readers.image_files import list_image_files
from curation.rundir import RunDir
from curation.stages.embed import EmbedConfig
from curation.synth import SynthWebServer, write_url_list
from curation.train_descriptor import DescriptorTrainConfig, train_descriptor
from curation.train_descriptor.augment import AugmentConfig
from jobs.curate_ray import main
from tests.dedup_truth import (
    SMALL_WEB_ALSO_CAUGHT,
    check_dedup,
    expected_dedup,
    ok_synth_keys,
)

REPO = Path(__file__).resolve().parents[2]

# The job in a child process that SIGKILLs itself as soon as the ingest stage is marked complete:
# download and ingest are finished, dedup and embedding not begun.
_KILLED_AFTER_INGEST = textwrap.dedent(
    """
    import os, signal, sys
    from curation.rundir import StageDir
    from jobs.curate_ray import main

    real_mark_complete = StageDir.mark_complete

    def dying_mark_complete(self):
        real_mark_complete(self)
        if self.path.name == "ingest":
            os.kill(os.getpid(), signal.SIGKILL)

    StageDir.mark_complete = dying_mark_complete
    main(sys.argv[1:])
    """
)


@pytest.fixture(scope="module")
def descriptor(small_web, tmp_path_factory) -> Path:
    """A small descriptor trained for a fixed number of steps on part of the pool."""
    config = DescriptorTrainConfig(
        width=8,
        dim=16,
        augment=AugmentConfig(size=32),
        batch_size=16,
        max_steps=3,
        autocast="fp32",
        num_workers=0,
        threads=1,
    )
    loaders = [functools.partial(Path.read_bytes, p) for p in list_image_files(small_web.pool_dir)]
    out = tmp_path_factory.mktemp("descriptor") / "descriptor.pt"
    result = train_descriptor(config, loaders[:32], out)
    assert result.steps == 3
    return out


def _finished_files(run: RunDir, stages: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Data files and markers of the stages, by path: (inode, mtime). Stats and saved configs,
    which every submission refreshes, and temp files are left out."""
    files = {}
    for stage in stages:
        for path in run.stage(stage).path.rglob("*"):
            if path.is_file() and not path.name.startswith(("_stats", "_config", ".tmp")):
                stat = path.stat()
                files[str(path.relative_to(run.root))] = (stat.st_ino, stat.st_mtime_ns)
    return files


def test_killed_submission_resumes_to_the_uninterrupted_result(
    ray_runtime, small_web, descriptor, tmp_path, monkeypatch
):
    embed = ["model=descriptor", f"checkpoint={descriptor}", "device=cpu", "threads=1"]
    args = [
        f"runs_dir={tmp_path / 'runs'}",
        "name=job",
        "download.allow_private_networks=true",
        "download.number_sample_per_shard=50",
        "download.thread_count=8",
        *(f"embed.{setting}" for setting in embed),
    ]
    # The child joins the session's Ray as a job submitted to a cluster would (RAY_ADDRESS set).
    address = ray_runtime.get_runtime_context().gcs_address
    run = RunDir(tmp_path / "runs" / "job")
    with SynthWebServer(small_web.root) as server:
        urls = tmp_path / "urls.parquet"
        write_url_list(small_web, server.base_url, urls, include_bad=False, slow=False)
        args.append(f"download.url_list={urls}")
        child = subprocess.run(
            [sys.executable, "-c", _KILLED_AFTER_INGEST, *args],
            cwd=REPO,
            env={**os.environ, "RAY_ADDRESS": address},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        assert run.stage("download").is_complete() and run.stage("ingest").is_complete()
        assert not run.stage("dedup_exact").path.exists()
        finished = _finished_files(run, ("download", "ingest"))
        assert any(name.startswith("ingest/_shards/") for name in finished)

        monkeypatch.setenv("RAY_ADDRESS", address)
        assert main(args) == 0

    # Download and ingest were left as they were: nothing fetched or decoded again.
    assert _finished_files(run, ("download", "ingest")) == finished
    for stage in ("phash", "unique_images", "embed_sscd"):
        assert run.stage(stage).is_complete() and run.stage(stage).read_stats()["engine"] == "ray"
    # The uninterrupted run's result: the ground truth's dedup ...
    expected = expected_dedup(small_web.read("pool"), ok_synth_keys(run), SMALL_WEB_ALSO_CAUGHT)
    assert len(expected.unique_keys) == small_web.config.n_served_pool - 6 - 13
    check_dedup(run, expected)
    # ... and the embeddings the local engine gives the unique images with that checkpoint.
    embedded = pq.read_table(run.stage("embed_sscd").outputs()).sort_by("key")
    assert set(embedded.column("key").to_pylist()) == expected.unique_keys
    local_cfg = CurationConfig(
        name="local",
        runs_dir=tmp_path / "runs",
        embed=EmbedConfig(model="descriptor", checkpoint=descriptor, device="cpu", threads=1),
    )
    with get_engine("local", progress=False) as engine:
        run_embed(local_cfg, engine, run.stage("unique_images").outputs())
    local = pq.read_table(local_cfg.run_dir.stage("embed_sscd").outputs()).sort_by("key")
    assert embedded.column("key").equals(local.column("key"))
    np.testing.assert_allclose(
        embedded.column("embedding").combine_chunks().flatten().to_numpy(),
        local.column("embedding").combine_chunks().flatten().to_numpy(),
        atol=1e-5,
    )
