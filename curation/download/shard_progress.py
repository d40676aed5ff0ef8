"""The download's progress bar, in rows, fed by img2dataset's per-shard stats files.

img2dataset reports progress only by printing (a banner per URL shard, a shard counter, statistics
every few seconds), which :mod:`curation.run_log` sends to the run's log file. What it also leaves
is one ``NNNNN_stats.json`` per finished shard, written after the shard's data: the driver lists
those and turns their sample counts into one :class:`~curation.progress.StageProgress`, whichever
distributor (multiprocessing, Ray, Spark) fetched them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading

from curation import storage
from curation.progress import StageProgress, parquet_rows, progress_shown

logger = logging.getLogger(__name__)


class ShardStatsProgress(threading.Thread):
    """The download's bar: rows of the shards img2dataset has finished, read from the
    ``NNNNN_stats.json`` it writes last for each shard (its ``count``: the shard's samples, fetched
    or failed), polled by listing the output folder. Shards finished by an earlier run count as
    done from the start. Draws nothing, and polls nothing, when no bar is shown."""

    POLL_SECONDS = 0.5

    def __init__(self, url_dir: str | os.PathLike, output_dir: str | os.PathLike, name: str):
        super().__init__(name="lvd-download-progress", daemon=True)
        self.output_dir = output_dir
        self.counted: dict[str, int] = {}
        self.stopping = threading.Event()
        self.bar: StageProgress | None = None
        if not progress_shown():
            return
        url_files = storage.list_files(url_dir, "*.parquet")
        self._poll()
        self.bar = StageProgress(
            name,
            total_rows=parquet_rows(url_files, local_only=False),
            total_shards=len(url_files),
            initial_rows=sum(self.counted.values()),
            initial_shards=len(self.counted),
            shown=True,
        )

    def _poll(self) -> tuple[int, int]:
        """Count the stats files not yet counted; returns (rows, shards) they add."""
        rows = shards = 0
        for path in storage.list_files(self.output_dir, "*_stats.json"):
            if path.name in self.counted:
                continue
            try:
                count = int(json.loads(storage.read_bytes(path))["count"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written: counted at a later poll
            self.counted[path.name] = count
            rows += count
            shards += 1
        return rows, shards

    def _update(self) -> None:
        rows, shards = self._poll()
        if shards:
            self.bar.advance(rows, shards)

    def run(self) -> None:
        while not self.stopping.wait(self.POLL_SECONDS):
            try:
                self._update()
            except Exception:  # noqa: BLE001 - a missed poll only delays the bar
                logger.debug("download progress poll failed", exc_info=True)

    def __enter__(self) -> ShardStatsProgress:
        if self.bar is not None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is None:
            return
        self.stopping.set()
        self.join()
        with contextlib.suppress(Exception):
            self._update()
        self.bar.close()
