"""In-process engine: the embedded default. One stage instance, shards in order, a progress bar
in rows (:mod:`curation.progress`)."""

from __future__ import annotations

import logging

from curation import storage
from curation.engines.base import Engine
from curation.progress import StageProgress, parquet_rows, progress_shown
from curation.runner import ShardTask, process_shard
from curation.stages.base import StageSpec

logger = logging.getLogger(__name__)


class LocalEngine(Engine):
    name = "local"
    img2dataset_distributor = "multiprocessing"

    @classmethod
    def from_config(cls, config) -> LocalEngine:
        storage.configure(config.storage)
        return cls()

    def __init__(self, progress: bool | None = None):
        """``progress``: draw a bar (None: on a terminal only, see :mod:`curation.progress`)."""
        self.progress = progress

    def run_shards(self, spec: StageSpec, tasks: list[ShardTask]) -> list[dict]:
        stage = spec.build()
        shown = progress_shown(self.progress)
        # Footers of local files cost microseconds; on a store a request each, so shards there.
        total_rows = parquet_rows(t.input_path for t in tasks) if shown else None
        results = []
        with StageProgress(
            spec.name, total_rows=total_rows, total_shards=len(tasks), shown=shown
        ) as bar:
            for task in tasks:
                result = process_shard(stage, task)
                results.append(result)
                bar.advance(result["rows_in"])
        return results
