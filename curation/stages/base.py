"""The stage contract (ARCHITECTURE.md, "Stages").

A stage is a callable class over Arrow. Each instance says its name, its input and output schemas,
the resources one worker needs and its batch size: plain class attributes for most stages, set in
``__init__`` from the config where they depend on it (an embedding width, GPUs per worker).
``__init__`` only stores config, so building a stage to read those is cheap; ``setup()`` loads
models or indexes once per worker; ``__call__`` maps one ``pa.Table`` batch to another. Row
failures are data (``status`` / ``error_message`` columns), never exceptions. A stage never knows
which engine runs it, nor where its outputs go: it imports only this module, ``io``, ``imaging``,
``readers``, ``models``, ``index`` and ``schemas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; every engine honours it or refuses the stage loudly."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus <= 0 or self.gpus < 0 or self.memory_gb < 0:
            raise ValueError(
                f"resources must be positive CPUs and non-negative GPUs/memory: {self}"
            )


@runtime_checkable
class Stage(Protocol):
    name: str
    input_schema: pa.Schema
    output_schema: pa.Schema
    resources: Resources
    batch_size: int

    def setup(self) -> None: ...

    def __call__(self, batch: pa.Table) -> pa.Table: ...


@dataclass(frozen=True)
class StageSpec:
    """A picklable recipe for building a stage on any worker: its class and its config."""

    stage_cls: type
    config: Any = None

    def instantiate(self) -> Stage:
        """The stage with its config stored and nothing loaded."""
        return self.stage_cls(self.config) if self.config is not None else self.stage_cls()

    def build(self) -> Stage:
        """The stage, set up: what a worker runs."""
        stage = self.instantiate()
        stage.setup()
        return stage

    @cached_property
    def declared(self) -> Stage:
        """An unloaded instance, for what engines and the runner read before any worker starts:
        name, schemas, resources, batch size (all per instance)."""
        return self.instantiate()

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def resources(self) -> Resources:
        return self.declared.resources
