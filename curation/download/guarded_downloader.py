"""img2dataset's per-shard downloader and progress logger, subclassed to be safe and to die with
the driver.

A module of its own, apart from :mod:`curation.download.network_guard`, because it imports
img2dataset (slow: OpenCV, albumentations): only download workers and :func:`run_img2dataset
<curation.download.img2dataset_job.run_img2dataset>` import it, while the plan-time half of the
guard is imported by every ``lvd download``.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from img2dataset.downloader import Downloader
from img2dataset.logger import LoggerProcess

from curation.download.kill_points import kill_point
from curation.download.network_guard import NetworkPolicy, install_guard
from curation.run_log import send_output_to

logger = logging.getLogger(__name__)


class GuardedDownloader(Downloader):
    """img2dataset's Downloader with the connection guard installed before each shard.

    With ``shard_lock`` set (local runs), each shard is fetched under a shared lock on that file:
    if the driver is killed alone, its orphan workers finish their current shard still holding
    it, and the rerun waits for them (exclusive lock) before it starts writing the same shards.

    With ``output_log`` set (local runs under ``lvd``), the worker's prints go to that file
    (:func:`~curation.run_log.send_output_to`); a failed shard is still said on the terminal.
    """

    def __init__(
        self,
        *,
        policy: NetworkPolicy,
        max_response_bytes: int | None = None,
        shard_lock: str | None = None,
        output_log: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self.shard_lock = shard_lock
        self.output_log = output_log

    def __call__(self, row):
        if self.output_log is not None:
            send_output_to(self.output_log)
        install_guard(self.policy, self.max_response_bytes)
        if self.shard_lock is None:
            result = super().__call__(row)
        else:
            with open(self.shard_lock, "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH)
                result = super().__call__(row)
        if self.output_log is not None and result[0] is False:
            logger.warning(
                "download shard %s failed (img2dataset retries it); its traceback is in %s",
                row[0],
                self.output_log,
            )
        return result


def wait_for_orphan_workers(shard_lock: Path, timeout: float = 3600.0) -> None:
    """Block until no worker of an earlier, killed run still fetches a shard (see above)."""
    import time

    Path(shard_lock).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(shard_lock, "a+b") as lock:
        warned = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not warned:
                    logger.warning("waiting for workers of a killed run to finish their shard")
                    warned = True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{shard_lock} is still held by another process") from None
                time.sleep(0.2)
        fcntl.flock(lock, fcntl.LOCK_UN)


ORPHAN_POLL_SECONDS = 1.0


def _exit_when_orphaned(driver_pid: int) -> None:
    """Make this process end when the driver that started it dies, however it dies.

    On Linux, prctl(PR_SET_PDEATHSIG) has the kernel SIGKILL us when the driver dies. It only
    covers a death *after* the call, and a spawned child reaches this point after importing
    img2dataset (seconds): a driver killed meanwhile leaves us already reparented, so the parent
    pid is checked right after the call. A thread that polls the parent pid covers the rest
    (other platforms, a parent-death signal lost to a subreaper).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != driver_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == driver_pid:
            threading.Event().wait(ORPHAN_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="lvd-orphan-watch", daemon=True).start()


class GuardedLoggerProcess(LoggerProcess):
    """img2dataset's progress logger, which otherwise polls forever once its driver is killed
    (its stop message never comes): it exits as soon as the driver is gone.

    It is started from the driver's main thread and shares no lock the driver waits on, so dying
    abruptly is safe; pool workers must not do the same (a worker killed inside the pool's queue
    lock hangs the pool).
    """

    def __init__(self, *args, output_log: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.driver_pid = os.getpid()  # pickled into the spawned child
        self.output_log = output_log  # its statistics lines: to the log file, if any

    def start(self):
        super().start()
        kill_point("logger_started")

    def run(self):
        _exit_when_orphaned(self.driver_pid)
        if self.output_log is not None:
            send_output_to(self.output_log)
        return super().run()
