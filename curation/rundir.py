"""The run directory (ARCHITECTURE.md, "Run directory"): one folder per stage, markers, stats.

Metadata names start with ``_`` (``_SUCCESS``, ``_stats.json``, ``_config.yaml``, ``_shards/``) so
that a stage folder reads as one dataset with ``pq.read_table(dir)`` or ``spark.read.parquet(dir)``.
Run folders written before that rename (``stats.json``, ``config.yaml``) still read.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from curation.config import dump_yaml
from curation.io import read_json, write_bytes_atomic, write_json_atomic

SUCCESS = "_SUCCESS"
STATS = "_stats.json"
CONFIG = "_config.yaml"
LEGACY_STATS = "stats.json"
LEGACY_CONFIG = "config.yaml"


class StageDir:
    """``runs/<name>/<stage>/``: output shards, ``_shards/*.json`` markers, ``_stats.json``,
    ``_config.yaml`` (the stage's resolved config) and ``_SUCCESS``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def shard_output(self, stem: str) -> Path:
        return self.path / f"{stem}.parquet"

    def shard_marker(self, stem: str) -> Path:
        return self.path / "_shards" / f"{stem}.json"

    def outputs(self) -> list[Path]:
        """Output shards whose marker exists, in name order (never a half-finished shard)."""
        markers = sorted((self.path / "_shards").glob("*.json"))
        return [self.shard_output(m.stem) for m in markers if self.shard_output(m.stem).is_file()]

    def is_complete(self) -> bool:
        return (self.path / SUCCESS).is_file()

    def mark_complete(self) -> None:
        write_bytes_atomic(self.path / SUCCESS, b"")

    def read_stats(self) -> dict[str, Any]:
        for name in (STATS, LEGACY_STATS):
            if (self.path / name).is_file():
                return read_json(self.path / name)
        return {}

    def write_stats(self, stats: dict[str, Any]) -> None:
        write_json_atomic(self.path / STATS, stats)

    def merge_shard_stats(self, **extra: Any) -> dict[str, Any]:
        """Sum every shard marker's counters into ``_stats.json``."""
        counters: Counter = Counter()
        shard_seconds = 0.0
        shards = 0
        for marker in sorted((self.path / "_shards").glob("*.json")):
            result = read_json(marker)
            # ``counters_json``: markers written before SHARD_RESULT v2.
            counters.update(json.loads(result.get("row_counts_json") or result["counters_json"]))
            shard_seconds += result["seconds"]
            shards += 1
        stats = {
            "stage": self.path.name,
            "shards": shards,
            **dict(sorted(counters.items())),
            "shard_seconds": round(shard_seconds, 3),
            **extra,
        }
        self.write_stats(stats)
        return stats

    def save_config(self, config: Any) -> Path:
        """The stage's resolved config, next to its outputs."""
        path = self.path / CONFIG
        write_bytes_atomic(path, dump_yaml(config).encode())
        return path


class RunDir:
    """``runs/<name>/``: the resolved config and one :class:`StageDir` per stage."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def stage(self, name: str) -> StageDir:
        return StageDir(self.root / name)

    def save_config(self, config: Any) -> Path:
        """The whole run's resolved config (each stage also saves its own part)."""
        path = self.root / CONFIG
        write_bytes_atomic(path, dump_yaml(config).encode())
        return path

    def saved_config(self) -> Path | None:
        """The run's saved config file, also in a run folder of the older layout."""
        for name in (CONFIG, LEGACY_CONFIG):
            if (self.root / name).is_file():
                return self.root / name
        return None
