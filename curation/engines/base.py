"""What every engine offers: run a stage over a list of shard tasks, and close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from curation.runner import ShardTask
from curation.stages.base import StageSpec


class EngineUnavailable(ImportError):
    """The engine's package is not installed; the message names the extra to install."""


class Engine(ABC):
    name: ClassVar[str]

    @abstractmethod
    def run_shards(self, spec: StageSpec, tasks: list[ShardTask]) -> list[dict]:
        """Process every task (each writes its output and marker); return SHARD_RESULT rows."""

    def close(self) -> None:  # noqa: B027 - engines without resources need not override
        """Release what the engine started (sessions, clusters it owns)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
