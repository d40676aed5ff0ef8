"""Run img2dataset on a URL plan: our settings mapped onto its arguments, its workers guarded.

img2dataset has no hook for address checks, so for the duration of the call
:func:`run_img2dataset` has it build its ``Downloader`` as our
:class:`~curation.download.guarded_downloader.GuardedDownloader` (a subclass that installs the
connection guard in each worker), its ``LoggerProcess`` as one that dies with the driver
(and that we stop ourselves if img2dataset raises before joining it), and its multiprocessing
distribution as :mod:`curation.download.worker_pool`'s (workers forked from a preloaded server
instead of spawned: no 3.5-s import per worker). The distributor
(``multiprocessing``, ``ray``, ``pyspark``) is the engine's ``img2dataset_distributor``.

The output folder may be a URI: img2dataset opens its outputs through fsspec, so a store needs that
scheme's fsspec package (s3fs for ``s3://``: the ``[s3]`` extra), checked before any work by
:func:`check_output_filesystem`.

What the terminal shows: one bar in rows (:mod:`curation.download.shard_progress`), not
img2dataset's own output. Under ``lvd`` its prints (a banner per URL shard, per-shard statistics,
per-sample tracebacks, its shard counter) go to the run's log file (:mod:`curation.run_log`): the
driver's as records of the ``img2dataset`` logger, the workers' (multiprocessing distributor: on
this machine) by their stdout and stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from curation import run_log, storage
from curation.config import ConfigError
from curation.cpus import affinity_cpus
from curation.download import worker_pool
from curation.download.config import DownloadConfig, needs_decode
from curation.download.kill_points import kill_point
from curation.download.network_guard import NetworkPolicy
from curation.download.shard_progress import ShardStatsProgress
from curation.download.url_lists import column_in_plan

logger = logging.getLogger(__name__)

SHARD_LOCK = ".shards.lock"
# The fsspec package each store's scheme needs, and the lvd extra that installs it.
FSSPEC_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", None)}


def check_output_filesystem(output_dir: str | os.PathLike) -> None:
    """A :class:`ConfigError` naming what to install if img2dataset (fsspec) cannot write to
    ``output_dir``'s store; nothing for local folders."""
    if not storage.is_uri(output_dir):
        return
    import fsspec

    scheme = storage.scheme_of(output_dir)
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        if scheme not in FSSPEC_PACKAGES:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ConfigError(
                f"img2dataset writes through fsspec, which cannot open {scheme}:// ({reason})"
            ) from exc
        package, extra = FSSPEC_PACKAGES[scheme]
        hint = f"pip install 'lvd[{extra}]'" if extra else f"pip install {package}"
        raise ConfigError(
            f"img2dataset writes {scheme}:// through fsspec, which needs {package} ({hint})"
        ) from exc


def shard_lock_path(output_dir: str | os.PathLike) -> Path:
    """The lock file that orphan download workers hold: beside a local output folder, or, for a
    folder on a store (no file locks there), in this machine's temp folder, named by the URI."""
    if storage.is_uri(output_dir):
        digest = hashlib.sha256(str(output_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "lvd-download-locks" / f"{digest}{SHARD_LOCK}"
    return Path(storage.as_path(output_dir)).parent / SHARD_LOCK


def img2dataset_arguments(settings: DownloadConfig, extra_columns: list[str]) -> dict:
    """Keyword arguments of ``img2dataset.download`` for ``settings`` (input and output aside)."""
    # output_format and resize_mode are Literal settings, checked when the config is built.
    verify = column_in_plan(settings.verify_sha256_col) if settings.verify_sha256_col else None
    if verify and verify not in extra_columns:
        raise ConfigError(
            f"download.verify_sha256_col {settings.verify_sha256_col!r} is not a column of the "
            "URL list (or keep_extra_columns is false)"
        )
    # img2dataset reads the verification column itself; listing it twice would read it twice.
    extra_columns = [c for c in extra_columns if c != verify]
    arguments = {
        "input_format": "parquet",
        "url_col": "url",
        "caption_col": "caption",
        "save_additional_columns": list(extra_columns) or None,
        "output_format": settings.output_format,
        "number_sample_per_shard": settings.number_sample_per_shard,
        "image_size": settings.image_size,
        "resize_mode": settings.resize_mode,
        "resize_only_if_bigger": settings.resize_only_if_bigger,
        "skip_reencode": settings.skip_reencode,
        "disable_all_reencoding": not needs_decode(settings),
        "encode_format": settings.encode_format,
        "encode_quality": settings.encode_quality,
        "min_image_size": settings.min_image_size,
        "max_aspect_ratio": settings.max_aspect_ratio or float("inf"),
        "compute_hash": "sha256",
        "verify_hash": [verify, "sha256"] if verify else None,
        "processes_count": settings.processes_count or affinity_cpus(),
        "thread_count": settings.thread_count,
        "timeout": settings.timeout,
        "retries": settings.retries,
        "max_shard_retry": settings.max_shard_retry,
        "user_agent_token": settings.user_agent_token,
        # img2dataset reads an empty list as "honour none" and None as "its default list".
        "disallowed_header_directives": list(settings.disallowed_header_directives),
        "extract_exif": False,
        "incremental_mode": "incremental",
        "enable_wandb": False,
    }
    return arguments


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _guarded_downloader(
    main_module,
    policy: NetworkPolicy,
    max_response_bytes: int | None,
    shard_lock: Path | None,
    output_log: Path | None = None,
):
    from curation.download.guarded_downloader import GuardedDownloader, GuardedLoggerProcess

    original = getattr(main_module, "Downloader", None)
    if original is None or not issubclass(GuardedDownloader, original):
        raise RuntimeError(
            "this img2dataset version does not build its Downloader as expected "
            "(img2dataset.main.Downloader); lvd is tested with img2dataset 1.47"
        )

    log = str(output_log) if output_log else None

    def build(**kwargs):
        lock = str(shard_lock) if shard_lock else None
        return GuardedDownloader(
            policy=policy,
            max_response_bytes=max_response_bytes,
            shard_lock=lock,
            output_log=log,
            **kwargs,
        )

    loggers: list[GuardedLoggerProcess] = []

    def build_logger(*args, **kwargs):
        loggers.append(GuardedLoggerProcess(*args, output_log=log, **kwargs))
        return loggers[-1]

    original_logger = main_module.LoggerProcess
    original_distributor = main_module.multiprocessing_distributor
    main_module.Downloader = build
    main_module.LoggerProcess = build_logger
    main_module.multiprocessing_distributor = worker_pool.multiprocessing_distributor
    try:
        yield
    finally:
        main_module.Downloader = original
        main_module.LoggerProcess = original_logger
        main_module.multiprocessing_distributor = original_distributor
        # img2dataset joins its logger only when it returns; if it raised, the logger would poll
        # for as long as this process lives (a notebook, a job driver).
        for process in loggers:
            if process.pid is not None and process.is_alive():
                process.terminate()
                process.join(timeout=30)


def run_img2dataset(
    url_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: DownloadConfig,
    *,
    distributor: str,
    extra_columns: list[str],
) -> None:
    """Download the URL shards in ``url_dir`` into ``output_dir`` (incremental: done shards stay)."""
    # Albumentations (imported by img2dataset) phones home for updates unless told not to.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # img2dataset/__init__ rebinds the name "main" to a function: fetch the module itself.
    img2dataset_main = importlib.import_module("img2dataset.main")

    arguments = img2dataset_arguments(settings, extra_columns)
    arguments["distributor"] = distributor
    policy = NetworkPolicy(allow_private_networks=settings.allow_private_networks)
    shard_lock = output_log = None
    if distributor == "multiprocessing":  # workers on this machine: a file lock reaches them
        from curation.download.guarded_downloader import wait_for_orphan_workers

        shard_lock = shard_lock_path(output_dir)
        wait_for_orphan_workers(shard_lock)
        output_log = run_log.third_party_log()  # and they can append to the run's log file
    previous_sigint = signal.getsignal(signal.SIGINT)
    # Spawned workers inherit the environment: OpenCV reads its decode limit at import.
    # The bar is made before prints are captured, so it keeps the terminal's stderr.
    with (
        _environment(OPENCV_IO_MAX_IMAGE_PIXELS=str(settings.max_pixels)),
        _guarded_downloader(
            img2dataset_main, policy, settings.max_response_bytes, shard_lock, output_log
        ),
        ShardStatsProgress(url_dir, output_dir, "download"),
        run_log.prints_to_log("img2dataset"),
    ):
        try:
            img2dataset_main.download(
                url_list=str(url_dir), output_folder=str(output_dir), **arguments
            )
            kill_point("img2dataset_done")
        finally:
            # img2dataset installs a SIGINT handler that exits the process; put ours back.
            signal.signal(signal.SIGINT, previous_sigint)
