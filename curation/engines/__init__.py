"""Engines: the only modules that import ray or pyspark. Chosen by name from a registry."""

from __future__ import annotations

import importlib

from curation.engines.base import Engine, EngineConfig, EngineResourceError, EngineUnavailable

# name -> "module:Class"; modules are imported only when their engine is asked for.
ENGINES: dict[str, str] = {
    "local": "curation.engines.local:LocalEngine",
    "ray": "curation.engines.ray:RayEngine",
    "spark": "curation.engines.spark:SparkEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``, its module imported only now."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_engine(name: str, **options) -> Engine:
    """Build the engine registered as ``name`` (``local``, ``ray`` or ``spark``) from keywords."""
    return engine_class(name)(**options)


def build_engine(config: EngineConfig) -> Engine:
    """Build the engine a run's config names, with its settings."""
    return engine_class(config.name).from_config(config)


__all__ = [
    "ENGINES",
    "Engine",
    "EngineConfig",
    "EngineResourceError",
    "EngineUnavailable",
    "build_engine",
    "engine_class",
    "get_engine",
]
