"""The run directory (ARCHITECTURE.md, "Run directory"): one folder per stage, markers, stats.

Metadata names start with ``_`` (``_SUCCESS``, ``_stats.json``, ``_config.yaml``, ``_shards/``) so
that a stage folder reads as one dataset with ``pq.read_table(dir)`` or ``spark.read.parquet(dir)``.
Run folders written before that rename (``stats.json``, ``config.yaml``) still read.

The run root may be a local path or a URI (``s3://bucket/runs/<name>``): every file access goes
through :mod:`curation.storage`. A shard's output counts only if its marker exists and names the
output's size (the commit protocol of :mod:`curation.runner`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from curation import storage
from curation.config import dump_yaml
from curation.io import read_json, write_bytes_atomic, write_json_atomic

SUCCESS = "_SUCCESS"
STATS = "_stats.json"
CONFIG = "_config.yaml"
LEGACY_STATS = "stats.json"
LEGACY_CONFIG = "config.yaml"


def marker_matches(marker: dict[str, Any], output: Path) -> bool:
    """The shard marker names this output: it exists with the size the marker records. Markers
    written before ``output_size`` was recorded need only the output to exist."""
    found = storage.size(output)
    if found is None:
        return False
    expected = marker.get("output_size")
    return expected is None or int(expected) == found


class StageDir:
    """``runs/<name>/<stage>/``: output shards, ``_shards/*.json`` markers, ``_stats.json``,
    ``_config.yaml`` (the stage's resolved config) and ``_SUCCESS``."""

    def __init__(self, path: Path | str):
        self.path = storage.as_path(path)

    def shard_output(self, stem: str) -> Path:
        return self.path / f"{stem}.parquet"

    def shard_marker(self, stem: str) -> Path:
        return self.path / "_shards" / f"{stem}.json"

    def markers(self) -> list[Path]:
        return storage.list_files(self.path / "_shards", "*.json")

    def shard_done(self, stem: str) -> bool:
        """True if the shard's marker exists and its output is the one the marker names."""
        marker = self.shard_marker(stem)
        if not storage.exists(marker):
            return False
        return marker_matches(read_json(marker), self.shard_output(stem))

    def outputs(self) -> list[Path]:
        """Output shards whose marker exists and matches them, in name order (never a
        half-finished shard, nor an output a killed writer left without its marker)."""
        return [
            self.shard_output(m.stem)
            for m in self.markers()
            if marker_matches(read_json(m), self.shard_output(m.stem))
        ]

    def is_complete(self) -> bool:
        return storage.exists(self.path / SUCCESS)

    def mark_complete(self) -> None:
        write_bytes_atomic(self.path / SUCCESS, b"")

    def read_stats(self) -> dict[str, Any]:
        for name in (STATS, LEGACY_STATS):
            if storage.exists(self.path / name):
                return read_json(self.path / name)
        return {}

    def write_stats(self, stats: dict[str, Any]) -> None:
        write_json_atomic(self.path / STATS, stats)

    def merge_shard_stats(self, **extra: Any) -> dict[str, Any]:
        """Sum every shard marker's counters into ``_stats.json``."""
        counters: Counter = Counter()
        shard_seconds = 0.0
        shards = 0
        for marker in self.markers():
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

    def __init__(self, root: Path | str):
        self.root = storage.as_path(root)

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
            if storage.exists(self.root / name):
                return self.root / name
        return None
