"""The stage contract (ARCHITECTURE.md, "Stages").

A stage is a callable class over Arrow: class attributes declare its name, its input and output
schemas, the resources one worker needs and its default batch size (an instance may override the
schemas or the batch size from its config, e.g. an embedding dimension); ``__init__`` only stores config; ``setup()`` loads
models or indexes once per worker; ``__call__`` maps one ``pa.Table`` batch to another. Row failures
are data (``status`` / ``error_message`` columns), never exceptions. Stages never know which engine
runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; engines map it onto actors, tasks or executors."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0


@runtime_checkable
class Stage(Protocol):
    name: ClassVar[str]
    input_schema: ClassVar[pa.Schema]
    output_schema: ClassVar[pa.Schema]
    resources: ClassVar[Resources]
    batch_size: ClassVar[int]

    def setup(self) -> None: ...

    def __call__(self, batch: pa.Table) -> pa.Table: ...


@dataclass(frozen=True)
class StageSpec:
    """A picklable recipe for building a stage on any worker: its class and its config."""

    stage_cls: type
    config: Any = None

    @property
    def name(self) -> str:
        return self.stage_cls.name

    def build(self) -> Stage:
        stage = self.stage_cls(self.config) if self.config is not None else self.stage_cls()
        stage.setup()
        return stage
