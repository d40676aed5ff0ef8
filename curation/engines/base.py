"""What every engine offers: run a stage over a list of shard tasks, and close; and the engine
settings of a run's config."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from curation.config import check_choices
from curation.runner import ShardTask
from curation.stages.base import StageSpec
from curation.storage import StorageConfig


class EngineUnavailable(ImportError):
    """The engine's package is not installed; the message names the extra to install."""


class EngineResourceError(RuntimeError):
    """A stage declares resources the engine cannot give each of its workers."""


@dataclass(frozen=True)
class EngineConfig:
    name: Literal["local", "ray", "spark"] = "local"
    ray_address: str | None = None  # None: start a local Ray; "auto" under `ray job submit`
    num_workers: int | None = None  # Ray actor-pool size; None: one per free CPU
    spark_master: str | None = None  # None: local[*], or whatever spark-submit sets
    # Where an S3-compatible store answers; credentials come from the environment only.
    storage: StorageConfig = field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        check_choices(self)


class Engine(ABC):
    name: ClassVar[str]
    # How img2dataset distributes a download on this engine (its ``distributor`` argument).
    img2dataset_distributor: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: EngineConfig) -> Engine:
        """The engine with the settings of ``config`` that concern it."""

    @abstractmethod
    def run_shards(self, spec: StageSpec, tasks: list[ShardTask]) -> list[dict]:
        """Process every task (each writes its output and marker); return SHARD_RESULT rows."""

    def close(self) -> None:  # noqa: B027 - engines without resources need not override
        """Release what the engine started (sessions, clusters it owns)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
