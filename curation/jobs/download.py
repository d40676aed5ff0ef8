"""The download job: img2dataset over a URL list, made polite, safe, resumable and retryable.

A job over all shards, distributed by img2dataset itself through the distributor the engine names
(``multiprocessing`` on the local engine, ``ray`` on the Ray engine, ``pyspark`` on Spark):

1. the URL list becomes a frozen URL plan (:mod:`curation.download.plan`): refused URLs recorded as
   ``blocked_address`` / ``invalid_url`` without a request, the rest ordered by host round-robin and
   cut into shards;
2. img2dataset fetches the shards into ``download/raw/`` (incremental mode: a rerun skips finished
   shards), its workers guarded at connection time (:mod:`curation.download.network_guard`);
3. each finished shard is converted to DOWNLOADED_SAMPLE and ENCODED_IMAGE parts
   (:mod:`curation.download.shards`); ``_stats.json`` counts every status and error.

``run_retry_failed`` re-downloads only failed samples and merges them back under their own keys
(:mod:`curation.download.retry`).

On object storage (``runs_dir=s3://bucket/runs``, any fsspec filesystem) img2dataset writes its
shards straight to the store: it opens every output through fsspec (``pip install 'lvd[s3]'`` for
``s3://``, which brings s3fs), so its workers, wherever the distributor runs them, need no disk
shared with the driver. A shard's tar and metadata are whole objects before its ``_stats.json``
appears (img2dataset writes that last), so "finished" keeps its meaning on a store; the rest of the
layout (plan, conversion, markers) goes through :mod:`curation.storage`. Staging on local disk and
uploading finished shards would only work while every worker runs on the driver's machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pyarrow.compute as pc

from curation import storage
from curation.config import ConfigError
from curation.download.config import (
    DownloadConfig,
    DownloadLayout,
    StoragePath,
    resume_signature,
)
from curation.download.img2dataset_job import check_output_filesystem, run_img2dataset
from curation.download.network_guard import NetworkPolicy
from curation.download.plan import UrlPlan, build_plan, check_signature, load_plan
from curation.download.shards import STATUS_SUCCESS, convert_shard, finished_shards
from curation.download.url_lists import fingerprint, read_url_list, url_list_files
from curation.engines import Engine
from curation.io import read_json, sweep_temp_files, write_parquet_atomic
from curation.jobs.config import CurationConfig
from curation.rundir import StageDir
from curation.safe_names import check_component
from schemas import DOWNLOADED_SAMPLE_SCHEMA

logger = logging.getLogger(__name__)

STAGE = "download"
BLOCKED_PART = "blocked.parquet"
TOP_ERRORS = 20
CONVERT_POLL_SECONDS = 0.5

__all__ = [
    "DownloadConfig",
    "DownloadIncomplete",
    "download_layout",
    "downloaded_sample_shards",
    "encoded_image_shards",
    "run_download",
    "run_retry_failed",
]


class DownloadIncomplete(RuntimeError):
    """img2dataset left shards unfinished; rerunning the same command resumes them."""


def download_layout(cfg: CurationConfig) -> DownloadLayout:
    check_component(cfg.name, "run name")
    return DownloadLayout(cfg.run_dir.stage(STAGE).path)


def encoded_image_shards(cfg: CurationConfig) -> list[StoragePath]:
    """The ENCODED_IMAGE parts of a finished download: the input of ingest."""
    return download_layout(cfg).encoded_parts()


def downloaded_sample_shards(cfg: CurationConfig) -> list[StoragePath]:
    """The DOWNLOADED_SAMPLE parts: every URL with its final download status."""
    return download_layout(cfg).sample_parts()


def _convert_finished(
    layout: DownloadLayout,
    wanted: set[int],
    settings: DownloadConfig,
    *,
    repair: bool,
    converted: set[int] | None = None,
) -> int:
    """Convert the finished, not yet converted shards; returns their successful downloads.
    ``converted``, kept by a caller that polls, grows with each shard found converted, so later
    polls neither reread those shards' files nor ask for their markers again."""
    converted = set() if converted is None else converted
    successes = 0
    finished = finished_shards(
        layout.raw, settings.output_format, repair=repair, known=frozenset(converted)
    )
    for shard_id in sorted(finished & wanted - converted):
        if not layout.marker(shard_id).is_file():
            counts = convert_shard(layout, shard_id, settings.output_format, settings.encode_format)
            successes += counts.get(STATUS_SUCCESS, 0)
        converted.add(shard_id)
    return successes


class _BackgroundConverter(threading.Thread):
    """Converts shards as img2dataset finishes them, while the driver would otherwise just wait;
    whatever it misses or fails on, the final pass after img2dataset does."""

    def __init__(self, layout: DownloadLayout, wanted: set[int], settings: DownloadConfig):
        super().__init__(name="lvd-shard-converter", daemon=True)
        self.args = (layout, wanted, settings)
        self.stopping = threading.Event()
        self.successes = 0
        self.converted: set[int] = set()

    def run(self) -> None:
        while not self.stopping.wait(CONVERT_POLL_SECONDS):
            try:
                self.successes += _convert_finished(
                    *self.args, repair=False, converted=self.converted
                )
            except Exception:  # noqa: BLE001 - retried by the final pass, which raises
                logger.debug("background conversion failed; the final pass retries", exc_info=True)


def fetch_and_convert(
    layout: DownloadLayout, plan: UrlPlan, settings: DownloadConfig, distributor: str
) -> int:
    """Fetch the plan's unfinished shards into ``layout.raw`` and convert every finished one.

    Returns the number of successful downloads among the shards converted by this call.
    """
    sweep_temp_files(layout.root)
    wanted = set(range(plan.n_fetch_shards))
    successes = 0
    if wanted - finished_shards(layout.raw, settings.output_format):
        layout.raw.mkdir(parents=True, exist_ok=True)
        converter = _BackgroundConverter(layout, wanted, settings)
        converter.start()
        try:
            run_img2dataset(
                plan.fetch_dir,
                layout.raw,
                settings,
                distributor=distributor,
                extra_columns=list(plan.extra_columns),
            )
        finally:
            converter.stopping.set()
            converter.join()
        successes += converter.successes
    missing = sorted(wanted - finished_shards(layout.raw, settings.output_format))
    if missing:
        raise DownloadIncomplete(
            f"img2dataset left {len(missing)} shard(s) unfinished (first: {missing[:5]}); "
            "rerun the same command to resume them"
        )
    return successes + _convert_finished(layout, wanted, settings, repair=True)


def count_statuses(layout: DownloadLayout) -> tuple[Counter, Counter]:
    """(status counts, error message counts of failed rows) over every samples part."""
    statuses: Counter = Counter()
    errors: Counter = Counter()
    for part in layout.sample_parts():
        table = storage.read_table(part, columns=["status", "error_message"])
        for item in pc.value_counts(table.column("status")).to_pylist():
            statuses[item["values"]] += item["counts"]
        failed = table.filter(pc.not_equal(table.column("status"), STATUS_SUCCESS))
        messages = pc.fill_null(failed.column("error_message"), "")
        for item in pc.value_counts(messages).to_pylist():
            errors[item["values"][:300]] += item["counts"]
    return statuses, errors


def write_download_stats(layout: DownloadLayout, stage: StageDir, **extra) -> dict:
    statuses, errors = count_statuses(layout)
    previous = stage.read_stats()
    stats = {
        "stage": STAGE,
        "rows_in": sum(statuses.values()),
        "rows_out": statuses.get(STATUS_SUCCESS, 0),
        **{f"status_{name}": n for name, n in sorted(statuses.items())},
        "errors": dict(errors.most_common(TOP_ERRORS)),
        "retries": previous.get("retries", []),
        **extra,
    }
    stage.write_stats(stats)
    return stats


def run_download(cfg: CurationConfig, engine: Engine) -> dict:
    """Download ``cfg.download.url_list`` into ``<run>/download/``; resumes an interrupted run.

    ``engine`` picks img2dataset's distributor. Returns the stage's stats. Raises
    :class:`~curation.download.plan.DownloadResumeError` if the run was started with another URL
    list or settings, :class:`DownloadIncomplete` if shards could not be finished.
    """
    settings: DownloadConfig = cfg.download
    if not settings.url_list:
        raise ConfigError("download.url_list is not set; pass --url-list or download.url_list=PATH")
    layout = download_layout(cfg)
    check_output_filesystem(layout.raw)
    stage = cfg.run_dir.stage(STAGE)
    signature = {
        "url_list": fingerprint(url_list_files(settings.url_list)),
        **resume_signature(settings),
    }
    plan = load_plan(layout.urls)
    if plan is not None:
        check_signature(layout.urls, signature)
    if stage.is_complete():
        logger.info("download of run %s is already complete; skipping", cfg.name)
        return stage.read_stats()
    distributor = engine.img2dataset_distributor
    start = time.perf_counter()
    layout.root.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.save_config(cfg)
    # The run's _config.yaml is rewritten by every job; --retry-failed needs this one.
    stage.save_config(cfg)
    if plan is None:
        table = read_url_list(
            settings.url_list,
            url_col=settings.url_col,
            caption_col=settings.caption_col,
            keep_extra_columns=settings.keep_extra_columns,
        )
        if table.num_rows == 0:
            raise ConfigError(f"URL list {settings.url_list} holds no URLs")
        plan = build_plan(
            layout.urls,
            table,
            samples_per_shard=settings.number_sample_per_shard,
            round_robin=settings.host_round_robin,
            policy=NetworkPolicy(settings.allow_private_networks),
            signature=signature,
        )
    successes = fetch_and_convert(layout, plan, settings, distributor)
    blocked = storage.read_table(plan.blocked_file)
    write_parquet_atomic(layout.samples / BLOCKED_PART, blocked, DOWNLOADED_SAMPLE_SCHEMA)
    seconds = time.perf_counter() - start
    stats = write_download_stats(
        layout,
        stage,
        shards=plan.n_fetch_shards,
        seconds=round(seconds, 3),
        images_per_second=round(successes / seconds, 2) if seconds > 0 else None,
        engine=engine.name,
        distributor=distributor,
    )
    stage.mark_complete()
    logger.info(
        "download of run %s: %s", cfg.name, {k: v for k, v in stats.items() if "status" in k}
    )
    return stats


def run_retry_failed(cfg: CurationConfig, engine: Engine) -> dict:
    """Re-download the samples of run ``cfg.name`` whose status is in ``download.retry_statuses``
    and merge the recovered ones back under their keys; returns the updated stats."""
    from curation.download.retry import retry_failed

    layout = download_layout(cfg)
    if storage.is_uri(layout.root):
        # The merge rewrites tars in place with tarfile and renames: local disk only, for now.
        raise ConfigError(
            f"--retry-failed runs on local disk only; {layout.root} is on an object store "
            "(sync the run folder to disk, retry there, and sync it back)"
        )
    stage = cfg.run_dir.stage(STAGE)
    if not stage.is_complete():
        raise ConfigError(
            f"run {cfg.name!r} has no finished download in {layout.root}; rerun `lvd download` "
            "with its arguments first (it resumes), then retry"
        )
    saved = read_json(layout.urls / "plan.json")["signature"]
    check_signature(layout.urls, {"url_list": saved["url_list"], **resume_signature(cfg.download)})
    start = time.perf_counter()
    summary = retry_failed(cfg, layout, engine.img2dataset_distributor)
    stats = stage.read_stats()
    retries = stats.get("retries", []) + ([summary] if summary else [])
    stage.write_stats({**stats, "retries": retries})
    return write_download_stats(
        layout,
        stage,
        **{k: stats[k] for k in ("shards", "seconds", "images_per_second", "engine") if k in stats},
        distributor=stats.get("distributor"),
        retry_seconds=round(time.perf_counter() - start, 3),
    )
