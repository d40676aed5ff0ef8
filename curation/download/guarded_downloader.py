"""img2dataset's per-shard downloader, made safe to run on URLs from the open web.

Imported only inside download workers (it imports img2dataset, which is slow to import).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import signal
import sys
from pathlib import Path

from img2dataset.downloader import Downloader
from img2dataset.logger import LoggerProcess

from curation.download.guard import install_guard
from curation.download.safety import NetworkPolicy

logger = logging.getLogger(__name__)


class GuardedDownloader(Downloader):
    """img2dataset's Downloader with the connection guard installed before each shard.

    With ``shard_lock`` set (local runs), each shard is fetched under a shared lock on that file:
    if the driver is killed alone, its orphan workers finish their current shard still holding
    it, and the rerun waits for them (exclusive lock) before it starts writing the same shards.
    """

    def __init__(
        self,
        *,
        policy: NetworkPolicy,
        max_response_bytes: int | None = None,
        shard_lock: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self.shard_lock = shard_lock

    def __call__(self, row):
        install_guard(self.policy, self.max_response_bytes)
        if self.shard_lock is None:
            return super().__call__(row)
        with open(self.shard_lock, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            return super().__call__(row)


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


class GuardedLoggerProcess(LoggerProcess):
    """img2dataset's progress logger, which otherwise polls forever once its driver is killed.

    On Linux it asks to be SIGKILLed when the driver dies (prctl PR_SET_PDEATHSIG). It is started
    from the driver's main thread and shares no lock the driver waits on, so this is safe; pool
    workers must not do the same (a worker killed inside the pool's queue lock hangs the pool).
    """

    def run(self):
        if sys.platform.startswith("linux"):
            try:
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass
        return super().run()
