"""The funnel from URLs to shards: one step per stage folder, with its counts and drop reasons.

Every figure comes from what the stage itself recorded, so the report never recounts differently
from the pipeline: ``status_*`` counters of ``download/`` and ``ingest/``, ``reason_*`` counters of
the hash dedup stages, the ``reason`` column of ``dedup_copy/`` (DEDUP_COMPONENT), row counts from
Parquet footers where a stage records none, ``shards/_stats.json`` and ``manifest.json``. A stage
folder that is absent is a step that did not run; one without ``_SUCCESS`` did not finish, and its
counts (if any) are shown as partial.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.io import read_json
from curation.rundir import RunDir, StageDir

NOT_RUN = "not run"
INCOMPLETE = "incomplete"
DONE = "done"
UNREADABLE = "could not be read"
KEPT_STATUS = {"download": "success", "ingest": "ok"}


@dataclass
class FunnelStep:
    """One stage's place in the funnel: images in and out, and why the others were dropped."""

    name: str
    folder: str
    state: str = NOT_RUN
    rows_in: int | None = None
    rows_out: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    detail: dict[str, int] = field(default_factory=dict)  # a breakdown that is not a drop


def _prefixed(stats: dict, prefix: str) -> dict[str, int]:
    return {
        k[len(prefix) :]: int(v)
        for k, v in sorted(stats.items())
        if k.startswith(prefix) and isinstance(v, int | float)
    }


def _state(stage: StageDir) -> str:
    if stage.is_complete():
        return DONE
    return INCOMPLETE if storage.list_files(stage.path) else NOT_RUN


def count_rows(paths: list) -> int:
    """Rows of Parquet files, from their footers (no data read)."""
    total = 0
    for path in paths:
        with storage.open_input(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _outputs(stage: StageDir) -> list:
    return stage.outputs() or storage.list_files(stage.path, "*.parquet")


def _status_step(run: RunDir, name: str, folder: str) -> FunnelStep:
    """download / ingest: rows with status ``success`` / ``ok`` go on, every other is a drop."""
    kept = KEPT_STATUS[folder]
    stage = run.stage(folder)
    step = FunnelStep(name, folder, _state(stage))
    stats = stage.read_stats()
    statuses = _prefixed(stats, "status_")
    if step.state == NOT_RUN or not (stats or statuses):
        return step
    step.rows_in = int(stats.get("rows_in", sum(statuses.values())))
    step.rows_out = statuses.get(kept, 0)
    step.dropped = {k: v for k, v in statuses.items() if k != kept and v}
    return step


def _reason_step(run: RunDir, name: str, folder: str) -> FunnelStep:
    """Exact / near-exact dedup: ``reason_kept`` goes on, every other reason is a drop."""
    stage = run.stage(folder)
    step = FunnelStep(name, folder, _state(stage))
    stats = stage.read_stats()
    reasons = _prefixed(stats, "reason_")
    if step.state == NOT_RUN or not reasons:
        return step
    step.rows_in = int(stats.get("rows_in", sum(reasons.values())))
    step.rows_out = reasons.get("kept", 0)
    step.dropped = {k: v for k, v in reasons.items() if k != "kept" and v}
    return step


def _copy_step(run: RunDir, name: str, folder: str) -> FunnelStep:
    """Copy dedup and decontamination: counted in the DEDUP_COMPONENT rows themselves."""
    stage = run.stage(folder)
    step = FunnelStep(name, folder, _state(stage))
    paths = _outputs(stage) if step.state != NOT_RUN else []
    if not paths:
        return step
    counts = pc.value_counts(storage.read_table(paths, columns=["reason"]).column("reason"))
    reasons = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
    step.rows_in = sum(reasons.values())
    step.rows_out = reasons.pop("kept", 0)
    step.dropped = dict(sorted(reasons.items()))
    return step


def _rows_step(run: RunDir, name: str, folder: str) -> FunnelStep:
    """A stage whose output rows are the count (deduplicated_images/, retrieved_images/)."""
    stage = run.stage(folder)
    step = FunnelStep(name, folder, _state(stage))
    paths = _outputs(stage) if step.state != NOT_RUN else []
    if paths:
        step.rows_out = count_rows(paths)
    return step


def _retrieval_step(run: RunDir, name: str, folder: str) -> FunnelStep:
    """RETRIEVAL_SELECTION: one row per selection, broken down by seed dataset and mode."""
    stage = run.stage(folder)
    step = FunnelStep(name, folder, _state(stage))
    paths = _outputs(stage) if step.state != NOT_RUN else []
    if not paths:
        return step
    table = storage.read_table(paths, columns=["seed_dataset", "mode"])
    pairs = zip(table.column("seed_dataset").to_pylist(), table.column("mode").to_pylist())
    step.rows_out = table.num_rows
    step.detail = dict(sorted(Counter(f"{s}/{m}" for s, m in pairs).items()))
    return step


def _shards_step(run: RunDir, name: str, folder: str) -> FunnelStep:
    stage = run.stage(folder)
    step = FunnelStep(name, folder, _state(stage))
    stats = stage.read_stats()
    if step.state == NOT_RUN or not stats:
        return step
    step.rows_in = stats.get("rows_in")
    step.rows_out = stats.get("rows_out")
    step.detail = {"shard files": int(stats.get("shards", 0))}
    return step


def _manifest_step(run: RunDir, name: str, folder: str) -> FunnelStep:
    step = FunnelStep(name, folder)
    path = run.root / folder
    if not storage.exists(path):
        return step
    manifest = read_json(path)
    step.state = DONE
    step.rows_out = manifest.get("num_samples")
    step.detail = {"shards": len(manifest.get("shards", []))}
    for part in manifest.get("composition", []):
        step.detail[f"{part.get('seed_dataset')}/{part.get('mode')}"] = part.get("num_samples", 0)
    return step


STEPS = (  # (builder, name, folder), in pipeline order
    (_status_step, "download", "download"),
    (_status_step, "ingest (decode checks)", "ingest"),
    (_reason_step, "exact dedup (sha256)", "dedup_exact"),
    (_reason_step, "near-exact dedup (pHash)", "dedup_near"),
    (_copy_step, "copy dedup + decontamination", "dedup_copy"),
    (_rows_step, "deduplicated images", "deduplicated_images"),
    (_retrieval_step, "retrieval (selections)", "retrieval"),
    (_rows_step, "retrieved images", "retrieved_images"),
    (_shards_step, "shards", "shards"),
    (_manifest_step, "manifest", "manifest.json"),
)
READ_ERRORS = (OSError, ValueError, KeyError, pa.ArrowException)


def funnel(run_root: str) -> list[FunnelStep]:
    """Every step from the URL list to the manifest; a step whose files cannot be read (corrupt,
    or not what the stage writes) says so and why, and the others are still counted."""
    run = RunDir(run_root)
    steps = []
    for build, name, folder in STEPS:
        try:
            steps.append(build(run, name, folder))
        except READ_ERRORS as exc:
            steps.append(FunnelStep(name, folder, f"{UNREADABLE}: {type(exc).__name__}: {exc}"))
    return steps
