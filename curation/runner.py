"""Run a stage over input shards with any engine; resumable and retry-safe.

The shard is the unit of distribution and of retry (as in img2dataset): input shard
``<in>/part-00003.parquet`` becomes ``<stage_dir>/part-00003.parquet``, written to a temp path and
renamed in, then a per-shard marker ``<stage_dir>/_shards/part-00003.json`` (its counters) is written
the same way. A shard is done iff its marker exists, so a rerun after a crash redoes only unfinished
shards and never duplicates rows. When every shard is done the stage writes ``_stats.json`` and
``_SUCCESS``; a rerun of a finished stage does nothing. The stage's resolved config is saved as
``_config.yaml`` beside its outputs.

Global stages (a function over every shard at once: exact or near dedup, later k-means and the kNN
graph) go through :func:`run_table_stage`, with the same marker, stats and resume behaviour.

Commit protocol (local disk and object stores alike; the run folder may be ``s3://...``, see
:mod:`curation.storage`):

1. The output is written once under its final name: on local disk to a temp file renamed in; on a
   store as one whole object (built in memory, uploaded on success; a writer killed mid-upload
   leaves no object, since an upload becomes visible only when it completes).
2. The shard marker is written *last*, and names the output's size (``output_size``).
3. A shard is done only if its marker exists and the output has that size
   (:meth:`StageDir.shard_done`); readers take only such outputs (:meth:`StageDir.outputs`). An
   output without a marker (its writer died between the two writes) is ignored and rewritten by
   the rerun, which therefore never duplicates rows.
4. ``_SUCCESS`` is written after every marker; a whole-folder dataset read is safe once it exists.

Lineage: ``source_file`` values under the run root are written run-relative (``download/0.tar``)
and resolved against the run root of the shard that holds them when read, so a run folder moved on
disk or synced to a store still finds its image bytes; absolute paths and URIs read as before.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.download.kill_points import kill_point
from curation.io import (
    AtomicParquetWriter,
    sweep_temp_files,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.readers.image_bytes import lineage_schema, relative_lineage, resolve_lineage
from curation.rundir import StageDir
from curation.stages.base import Stage, StageSpec
from schemas import SchemaError, validate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    input_path: str
    output_path: str
    marker_path: str

    @property
    def shard(self) -> str:
        return storage.as_path(self.input_path).stem


def run_root_of(shard_path: str | Path) -> str:
    """The run folder a stage's shard lies in: ``<run>/<stage>/<shard>`` -> ``<run>``."""
    return str(storage.as_path(shard_path).parent.parent)


def shard_counters(rows_in: int, output: pa.Table) -> Counter:
    counters: Counter = Counter(rows_in=rows_in, rows_out=output.num_rows)
    if "status" in output.column_names and output.num_rows:
        for item in pc.value_counts(output.column("status")).to_pylist():
            counters[f"status_{item['values']}"] += item["counts"]
    return counters


def process_shard(stage: Stage, task: ShardTask) -> dict:
    """Run ``stage`` over one input shard; write its output and marker atomically.

    Returns a row of ``SHARD_RESULT_SCHEMA``. Reading the input in ``stage.batch_size`` batches keeps
    memory bounded by the batch, not the shard.
    """
    start = time.perf_counter()
    parquet = pq.ParquetFile(storage.open_input(task.input_path))
    input_root, output_root = run_root_of(task.input_path), run_root_of(task.output_path)
    input_names = stage.input_schema.names
    missing = [n for n in input_names if n not in parquet.schema_arrow.names]
    if missing:
        raise SchemaError(
            f"{task.input_path}: input of stage {stage.name!r} lacks column(s) {missing}; "
            f"found {parquet.schema_arrow.names}"
        )
    counters: Counter = Counter()
    schema = lineage_schema(stage.output_schema, output_root)
    with AtomicParquetWriter(task.output_path, schema) as writer:
        for batch in parquet.iter_batches(batch_size=stage.batch_size, columns=input_names):
            table = resolve_lineage(pa.Table.from_batches([batch]), input_root)
            validate(table, stage.input_schema)
            output = stage(table)
            counters += shard_counters(table.num_rows, output)
            writer.write(relative_lineage(output, output_root))
            kill_point("shard_batch_written")
    kill_point("shard_output_written")
    result = {
        "shard": task.shard,
        "output": task.output_path,
        "output_size": storage.size(task.output_path),
        "rows_in": counters["rows_in"],
        "rows_out": counters["rows_out"],
        "seconds": time.perf_counter() - start,
        "row_counts_json": json.dumps(dict(sorted(counters.items()))),
    }
    write_json_atomic(task.marker_path, result)
    return result


def plan_tasks(inputs: list[Path], stage_dir: StageDir) -> tuple[list[ShardTask], list[ShardTask]]:
    """Split the shard tasks into (pending, done) by their markers."""
    stems = [storage.as_path(p).stem for p in inputs]
    duplicated = [s for s, n in Counter(stems).items() if n > 1]
    if duplicated:
        raise ValueError(f"input shards must have distinct file names; repeated: {duplicated[:5]}")
    pending, done = [], []
    for path in sorted(inputs, key=lambda p: storage.as_path(p).name):
        stem = storage.as_path(path).stem
        task = ShardTask(
            input_path=storage.absolute(path),
            output_path=storage.absolute(stage_dir.shard_output(stem)),
            marker_path=storage.absolute(stage_dir.shard_marker(stem)),
        )
        if stage_dir.shard_done(stem):
            done.append(task)
        else:
            storage.delete(task.marker_path)  # a marker naming another output: not done
            pending.append(task)
    return pending, done


def run_stage(spec: StageSpec, inputs: list[Path], stage_dir: StageDir, engine) -> dict:
    """Run ``spec`` over ``inputs`` into ``stage_dir`` with ``engine``; returns the merged stats.

    Skips everything if the stage already finished, and already-finished shards otherwise.
    """
    if stage_dir.is_complete():
        logger.info("stage %s already complete in %s; skipping", spec.name, stage_dir.path)
        return stage_dir.read_stats()
    if not inputs:
        raise FileNotFoundError(f"stage {spec.name!r}: no input shards")
    stage_dir.path.mkdir(parents=True, exist_ok=True)
    stage_dir.save_config({"stage": spec.name, "config": spec.config})
    swept = sweep_temp_files(stage_dir.path)
    if swept:
        logger.info("removed %d temp file(s) left by an interrupted run", swept)
    pending, done = plan_tasks(inputs, stage_dir)
    logger.info(
        "stage %s on %s: %d shard(s) to do, %d already done",
        spec.name,
        engine.name,
        len(pending),
        len(done),
    )
    start = time.perf_counter()
    if pending:
        engine.run_shards(spec, pending)
    missing = [t.shard for t in pending if not stage_dir.shard_done(t.shard)]
    if missing:
        raise RuntimeError(
            f"stage {spec.name!r}: engine {engine.name} left shards unfinished: {missing}"
        )
    stats = stage_dir.merge_shard_stats(engine=engine.name, seconds=time.perf_counter() - start)
    stage_dir.mark_complete()
    return stats


TABLE_OUTPUT = "part-00000.parquet"


def run_table_stage(
    name: str,
    compute: Callable[[], pa.Table],
    schema: pa.Schema,
    stage_dir: StageDir,
    *,
    config: Any = None,
    summarize: Callable[[pa.Table], dict] | None = None,
) -> dict:
    """Run a global stage: ``compute()`` sees all its inputs at once and returns one table, written
    as ``<stage_dir>/part-00000.parquet`` with ``_stats.json`` (``summarize(table)`` plus rows and
    seconds) and ``_SUCCESS``. A finished stage is skipped; an interrupted one is redone whole."""
    if stage_dir.is_complete():
        logger.info("stage %s already complete in %s; skipping", name, stage_dir.path)
        return stage_dir.read_stats()
    stage_dir.path.mkdir(parents=True, exist_ok=True)
    sweep_temp_files(stage_dir.path)
    stage_dir.save_config({"stage": name, "config": config})
    start = time.perf_counter()
    table = compute()
    output = stage_dir.path / TABLE_OUTPUT
    write_parquet_atomic(output, table, schema)
    stem = storage.as_path(output).stem
    write_json_atomic(
        stage_dir.shard_marker(stem),
        {
            "shard": stem,
            "output": str(output),
            "output_size": storage.size(output),
            "rows_in": table.num_rows,
            "rows_out": table.num_rows,
            "seconds": time.perf_counter() - start,
            "row_counts_json": json.dumps({"rows_out": table.num_rows}),
        },
    )
    stats = {
        "stage": stage_dir.path.name,
        **(summarize(table) if summarize else {"rows_out": table.num_rows}),
        "seconds": round(time.perf_counter() - start, 3),
    }
    stage_dir.write_stats(stats)
    stage_dir.mark_complete()
    return stats
