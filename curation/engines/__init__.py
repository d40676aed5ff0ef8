"""Engines: the only modules that import ray or pyspark. Chosen by name from a registry."""

from __future__ import annotations

import importlib

from curation.engines.base import Engine, EngineUnavailable

# name -> "module:Class"; modules are imported only when their engine is asked for.
ENGINES: dict[str, str] = {
    "local": "curation.engines.local:LocalEngine",
    "ray": "curation.engines.ray:RayEngine",
    "spark": "curation.engines.spark:SparkEngine",
}


def get_engine(name: str, **options) -> Engine:
    """Build the engine registered as ``name`` (``local``, ``ray`` or ``spark``)."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
    module_name, class_name = target.split(":")
    engine_cls = getattr(importlib.import_module(module_name), class_name)
    return engine_cls(**options)


__all__ = ["ENGINES", "Engine", "EngineUnavailable", "get_engine"]
