"""What the report shows of the pool's structure and of pretraining: cluster sizes from
``clusters/`` (CLUSTER_ASSIGNMENT), loss curves from ``pretrain/metrics.jsonl`` (one JSON object per
iteration, as :mod:`pretrain.train.loop` writes it), and k-NN accuracies from the demo's
``demo_summary.json`` or any ``knn*.json`` in the run folder.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass

import pyarrow.compute as pc

from curation import storage
from curation.io import read_json
from curation.rundir import RunDir

logger = logging.getLogger(__name__)

METRICS = "pretrain/metrics.jsonl"
DEMO_SUMMARY = "demo_summary.json"
MAX_BINS = 20


@dataclass
class ClusterSizes:
    sizes: list[int]  # one per non-empty cluster, largest first
    empty: int  # clusters with no image (from the stage's stats; 0 when unknown)
    bins: list[tuple[int, int, int]]  # (low, high, clusters with low <= size <= high)


@dataclass
class LossCurves:
    total: list[tuple[float, float]]  # (iteration, total_loss)
    parts: dict[str, list[tuple[float, float]]]  # dino_*, ibot_loss, koleo_loss, ...


def size_bins(sizes: list[int], max_bins: int = MAX_BINS) -> list[tuple[int, int, int]]:
    """Cluster sizes in at most ``max_bins`` equal-width integer bins covering min..max."""
    if not sizes:
        return []
    low, high = min(sizes), max(sizes)
    count = max(1, min(max_bins, len(sizes), high - low + 1))
    width = math.ceil((high - low + 1) / count)
    counts = Counter((size - low) // width for size in sizes)
    return [
        (low + i * width, min(high, low + (i + 1) * width - 1), counts.get(i, 0))
        for i in range((high - low) // width + 1)
    ]


def cluster_sizes(run_root: str) -> ClusterSizes | None:
    stage = RunDir(run_root).stage("clusters")
    paths = stage.outputs() or storage.list_files(stage.path, "*.parquet")
    if not paths:
        return None
    counts = pc.value_counts(storage.read_table(paths, columns=["cluster_id"]).column("cluster_id"))
    sizes = sorted(counts.field("counts").to_pylist(), reverse=True)
    empty = int((stage.read_stats().get("sizes") or {}).get("empty", 0) or 0)
    return ClusterSizes(sizes=sizes, empty=empty, bins=size_bins(sizes))


def loss_curves(run_root: str) -> LossCurves | None:
    """Every ``*_loss`` value of every iteration; lines that are not JSON objects are skipped
    (a run killed mid-write leaves half a line)."""
    path = storage.join(run_root, METRICS)
    if not storage.exists(path):
        return None
    total: list[tuple[float, float]] = []
    parts: dict[str, list[tuple[float, float]]] = {}
    for number, line in enumerate(storage.read_bytes(path).decode("utf-8").splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("report: %s line %d is not JSON; skipped", path, number + 1)
            continue
        if not isinstance(record, dict):
            continue
        step = record.get("iteration", number)
        for name, value in record.items():
            if not name.endswith("_loss") or not isinstance(value, int | float):
                continue
            target = total if name == "total_loss" else parts.setdefault(name, [])
            target.append((float(step), float(value)))
    if not total and not parts:
        return None
    return LossCurves(total=total, parts=dict(sorted(parts.items())))


def _knn_entries(summary: dict, prefix: str = "") -> dict[str, dict]:
    """``knn_*`` entries of a summary (a dict of figures each), looked for two levels deep."""
    found: dict[str, dict] = {}
    for name, value in summary.items():
        if not isinstance(value, dict):
            continue
        if name.startswith("knn"):
            found[prefix + name] = value
        elif not prefix:
            found.update(_knn_entries(value, prefix=f"{name}."))
    return found


def knn_results(run_root: str) -> dict[str, dict] | None:
    """Name -> the figures of one k-NN evaluation (``knn_top1``, ``knn_top5``, ...)."""
    found: dict[str, dict] = {}
    summary_path = storage.join(run_root, DEMO_SUMMARY)
    if storage.exists(summary_path):
        summary = read_json(summary_path)
        if isinstance(summary, dict):
            found.update(_knn_entries(summary))
    for path in storage.list_files(run_root, "knn*.json"):
        try:
            result = read_json(path)
        except (OSError, ValueError) as exc:
            logger.warning("report: %s is not readable JSON (%s); skipped", path, exc)
            continue
        if isinstance(result, dict) and any(k.startswith("knn_") for k in result):
            found[path.stem] = result
    return found or None
