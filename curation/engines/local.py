"""In-process engine: the embedded default. One stage instance, shards in order, a progress bar."""

from __future__ import annotations

import logging

from tqdm import tqdm

from curation import storage
from curation.engines.base import Engine
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

    def __init__(self, progress: bool = True):
        self.progress = progress

    def run_shards(self, spec: StageSpec, tasks: list[ShardTask]) -> list[dict]:
        stage = spec.build()
        results = []
        with tqdm(total=len(tasks), desc=spec.name, unit="shard", disable=not self.progress) as bar:
            for task in tasks:
                result = process_shard(stage, task)
                results.append(result)
                bar.set_postfix(rows=result["rows_out"])
                bar.update()
        return results
