"""img2dataset's ``multiprocessing`` distribution, with download workers that start in milliseconds.

img2dataset fetches shards in a pool of *spawned* processes, each replaced after 5 shards (its
guard against leaks in long-lived workers). A spawned worker imports img2dataset before its first
shard, and that import pulls in torch (through webdataset), albumentations, OpenCV, pandas and
wandb: 3.5 s of CPU on this project's 2-core machine, paid again by every replacement. Measured by
``benchmarks/bench_download.py`` (4,000 images in shards of 250), that start-up was most of the
workers' CPU time: ~17 of 22 CPU seconds, beside ~5 for the downloads themselves.

:func:`multiprocessing_distributor` keeps img2dataset's contract (same arguments, same
imap-unordered scheduling, same 5 shards per worker, img2dataset's own retry of failed shards) but
forks the workers from a *forkserver* that imported lvd's downloader, img2dataset with it, once:
a new worker is a fork, not an interpreter start-up.

The forkserver lives for one download call: started when its pool starts (so it carries this
call's environment, e.g. OpenCV's decode limit ``OPENCV_IO_MAX_IMAGE_PIXELS``, which OpenCV reads
when it is imported) and stopped when the call ends. A forkserver some other code started (its
imports and environment unknown) is left alone: that call spawns its workers as img2dataset does,
as do platforms without forkserver (Windows) and Pythons whose forkserver internals differ.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Iterator
from multiprocessing import forkserver

logger = logging.getLogger(__name__)

TASKS_PER_WORKER = 5  # img2dataset's maxtasksperchild: a worker is replaced after this many shards
PRELOAD = ["curation.download.guarded_downloader"]  # imports img2dataset.downloader with it
DEFAULT_PRELOAD = ["__main__"]  # multiprocessing's own


def _forkserver():
    """multiprocessing's forkserver singleton when it is idle (never started, or stopped) and
    this Python has the internals used here; else None."""
    server = getattr(forkserver, "_forkserver", None)
    if server is None or not hasattr(server, "_stop"):
        return None
    return server if getattr(server, "_forkserver_pid", "unknown") is None else None


@contextlib.contextmanager
def worker_context() -> Iterator[multiprocessing.context.BaseContext]:
    """The start method of one download's workers: a forkserver preloaded with the downloader,
    stopped on exit, or spawn when that cannot be had (see the module doc)."""
    server = _forkserver() if "forkserver" in multiprocessing.get_all_start_methods() else None
    if server is None:
        logger.debug("download workers are spawned (a forkserver runs already, or none here)")
        yield multiprocessing.get_context("spawn")
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    try:
        yield context
    finally:
        server._stop()
        context.set_forkserver_preload(DEFAULT_PRELOAD)


def multiprocessing_distributor(processes_count, downloader, reader, _subjob_size, max_shard_retry):
    """Fetch every shard ``reader`` yields with ``downloader`` in ``processes_count`` worker
    processes (img2dataset's distributor signature), retrying failed shards the way img2dataset
    does (its ``retrier``)."""
    from img2dataset.distributor import retrier

    with (
        worker_context() as context,
        context.Pool(processes_count, maxtasksperchild=TASKS_PER_WORKER) as pool,
    ):

        def run(shards) -> list:
            failed = []
            for ok, row in pool.imap_unordered(downloader, shards):
                if ok is False:
                    failed.append(row)
            return failed

        retrier(run, run(reader), max_shard_retry)
        pool.terminate()
        pool.join()
