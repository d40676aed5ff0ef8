"""The shards job: the selected images (SHARD_SOURCE rows) in, LVD shards out, in three steps that
each write their own folder of the run and resume like every stage.

1. ``shard_plan/`` (driver, global): every source row with status ok, in the global shuffle of
   ``shards.seed`` (:func:`curation.stages.shard.shuffled_order`), cut into one SHARD_SOURCE file
   per output shard (``shard-NNNNN.parquet``, ``samples_per_shard`` rows each, the last one
   shorter). The shuffle needs every row at once, so the plan holds the sources in this process
   (their metadata, and the bytes of seed images stored inline): fine for millions of rows; a pool
   the size of LVD-142M would plan with a distributed sort by a seeded hash of the key instead.
2. ``shard_samples/`` (the engine, per shard): :class:`~curation.stages.shard.ShardSampleStage`
   through :func:`curation.runner.run_stage`, so reading the source bytes, checking them and
   re-encoding large images (the costly part) runs on Ray or Spark workers like any stage, with its
   markers and resume. One PREPARED_SAMPLE file per output shard: every planned row, ready or with
   the status that says why not.
3. ``shards/`` (driver, per shard, I/O only): the ready rows of each prepared file packed as
   ``shard-NNNNN.tar`` (WebDataset) with ``shard-NNNNN.index.parquet`` (SHARD_INDEX: where each
   image's data lies in the tar), or as ``shard-NNNNN.parquet`` (LVD_SAMPLE, image bytes inline).
   Rows that failed are counted (``dropped_<status>``), so a shard holds ``samples_per_shard``
   samples less those, never a silent loss.

Why packing is not a stage: the engines commit Parquet outputs only, and a stage never knows where
its outputs go; packing is sequential I/O over bytes already prepared, one shard at a time.

Commit protocol (that of :mod:`curation.runner`): each shard file (and the index) is written whole
under its final name (locally a temp file renamed in, on a store one upload), then the marker
``shards/_shards/shard-NNNNN.json`` naming the files and their sizes. A shard is done only if its
marker exists and the files have those sizes; a rerun skips done shards and rewrites the others
(the same bytes: the plan is deterministic, tar headers carry no time). ``_stats.json`` (with
``completed_at``, the time the manifest reports) and ``_SUCCESS`` come last. A rerun with other
shard settings than the run's first is refused: the folders would mix two layouts.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curation import storage
from curation.config import ConfigError, dump_yaml, to_dict
from curation.download.kill_points import kill_point
from curation.engines import Engine
from curation.io import (
    atomic_path,
    read_json,
    sweep_temp_files,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.jobs.config import CurationConfig
from curation.readers.image_bytes import lineage_schema, relative_lineage, resolve_lineage
from curation.readers.input_shards import read_shard_schema
from curation.rundir import CONFIG, StageDir
from curation.runner import run_root_of, run_stage
from curation.stages.base import StageSpec
from curation.stages.shard import (
    ShardConfig,
    ShardSampleStage,
    cut_shards,
    ready_samples,
    shard_stem,
    shuffled_order,
    write_parquet,
    write_tar,
)
from schemas import SHARD_INDEX_SCHEMA, SHARD_SOURCE_SCHEMA, STATUS_OK, SchemaError, validate

logger = logging.getLogger(__name__)

SOURCES = "retrieved_images"  # what the retrieval job writes: SHARD_SOURCE rows
PLAN = "shard_plan"
SAMPLES = "shard_samples"
SHARDS = "shards"
INDEX_SUFFIX = ".index.parquet"


# ---------------------------------------------------------------------- sources


def default_sources(cfg: CurationConfig) -> list:
    """The retrieval job's output of the run: ``retrieved_images/`` once it is complete."""
    stage = cfg.run_dir.stage(SOURCES)
    if not stage.is_complete():
        raise FileNotFoundError(
            f"no finished retrieval in {stage.path} (no _SUCCESS): run `lvd retrieve` first, or "
            "give SHARD_SOURCE shards with --sources"
        )
    return stage.outputs() or storage.list_files(stage.path, "*.parquet")


def check_sources(paths: list) -> list:
    """``paths`` if each is a Parquet file with the SHARD_SOURCE columns; else a
    :class:`SchemaError` naming the first that is not (checked before any work)."""
    if not paths:
        raise FileNotFoundError("no SHARD_SOURCE shards to write LVD shards from")
    for path in paths:
        try:
            validate(read_shard_schema(path).empty_table(), SHARD_SOURCE_SCHEMA, allow_extra=True)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from None
    return list(paths)


def read_sources(paths: list) -> pa.Table:
    """Every source row, ``source_file`` resolved against the run each file lies in."""
    tables = []
    for path in paths:
        table = storage.read_table(path, columns=SHARD_SOURCE_SCHEMA.names)
        try:
            validate(table, SHARD_SOURCE_SCHEMA)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from None
        table = resolve_lineage(table, run_root_of(path))
        tables.append(table.cast(SHARD_SOURCE_SCHEMA))
    table = pa.concat_tables(tables)
    if pc.count_distinct(table.column("key")).as_py() != table.num_rows:
        counts = pc.value_counts(table.column("key")).to_pylist()
        repeated = sorted(c["values"] for c in counts if c["counts"] > 1)
        raise SchemaError(
            f"SHARD_SOURCE rows must hold each key once; {len(repeated)} key(s) repeat, e.g. "
            f"{repeated[:5]}"
        )
    return table


# ---------------------------------------------------------------------- the three steps


def plan(cfg: CurationConfig, sources: list) -> dict:
    """``shard_plan/``: the source rows in the global shuffle, one file per output shard."""
    run, config = cfg.run_dir, cfg.shards
    stage = run.stage(PLAN)
    if stage.is_complete():
        return stage.read_stats()
    stage.path.mkdir(parents=True, exist_ok=True)
    sweep_temp_files(stage.path)
    start = time.perf_counter()
    table = read_sources(sources)
    ok = pc.equal(table.column("status"), STATUS_OK)
    skipped = {
        f"skipped_status_{c['values']}": c["counts"]
        for c in pc.value_counts(table.filter(pc.invert(ok)).column("status")).to_pylist()
    }
    table = table.filter(ok)
    if not table.num_rows:
        raise FileNotFoundError(f"the sources hold no row with status {STATUS_OK!r} to shard")
    schema = lineage_schema(SHARD_SOURCE_SCHEMA, run.root)
    pieces = cut_shards(shuffled_order(table.column("key"), config.seed), config.samples_per_shard)
    for number, rows in enumerate(pieces):
        stem = shard_stem(number)
        if stage.shard_done(stem):
            continue
        part = relative_lineage(table.take(rows), run.root)
        write_parquet_atomic(stage.shard_output(stem), part, schema)
        write_json_atomic(
            stage.shard_marker(stem),
            {
                "shard": stem,
                "output": str(stage.shard_output(stem)),
                "output_size": storage.size(stage.shard_output(stem)),
                "rows_in": len(rows),
                "rows_out": len(rows),
                "seconds": 0.0,
                "row_counts_json": json.dumps({"rows_in": len(rows), "rows_out": len(rows)}),
            },
        )
    stats = {
        "stage": PLAN,
        "shards": len(pieces),
        "source_rows": table.num_rows + sum(skipped.values()),
        "rows_out": table.num_rows,
        **skipped,
        "seed": config.seed,
        "samples_per_shard": config.samples_per_shard,
        "seconds": round(time.perf_counter() - start, 3),
    }
    stage.write_stats(stats)
    stage.mark_complete()
    return stats


@contextlib.contextmanager
def whole_file(path) -> Iterator[io.RawIOBase]:
    """A binary file object whose content appears under ``path`` only once the block succeeds:
    locally a temp file renamed in, on a store one upload of the whole file."""
    target = storage.as_path(path)
    if storage.is_uri(target):
        buffer = io.BytesIO()
        yield buffer
        storage.write_bytes(target, buffer.getvalue())
        return
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        yield out


def committed(shards: StageDir, stem: str) -> dict | None:
    """The shard's marker if the shard is done (the files it names have the sizes it records)."""
    marker_path = shards.shard_marker(stem)
    if not storage.exists(marker_path):
        return None
    marker = read_json(marker_path)
    for name, size in (("output", "output_size"), ("index", "index_size")):
        if marker.get(name) and storage.size(shards.path / marker[name]) != marker.get(size):
            return None
    return marker


def pack(prepared_path, stem: str, shards: StageDir, config: ShardConfig) -> dict:
    """One LVD shard from its PREPARED_SAMPLE file: the shard (and its index), then its marker."""
    start = time.perf_counter()
    prepared = storage.read_table(prepared_path)
    samples, dropped = ready_samples(prepared)
    name = f"{stem}.{config.extension}"
    marker: dict = {"shard": stem, "output": name, "index": None, "index_size": None}
    if config.format == "webdataset":
        with whole_file(shards.path / name) as out:
            index = write_tar(samples, name, out)
        marker["index"] = stem + INDEX_SUFFIX
        write_parquet_atomic(shards.path / marker["index"], index, SHARD_INDEX_SCHEMA)
        marker["index_size"] = storage.size(shards.path / marker["index"])
    else:
        with whole_file(shards.path / name) as out:
            write_parquet(samples, out, config.row_group_size)
    marker["output_size"] = storage.size(shards.path / name)
    kill_point("lvd_shard_written")
    counters = {"rows_in": prepared.num_rows, "rows_out": samples.num_rows, **dropped}
    marker |= {
        "rows_in": prepared.num_rows,
        "rows_out": samples.num_rows,
        "seconds": time.perf_counter() - start,
        "row_counts_json": json.dumps(dict(sorted(counters.items()))),
    }
    write_json_atomic(shards.shard_marker(stem), marker)
    return marker


def settings_record(config: ShardConfig, sources: list, run_root) -> dict:
    """What ``shards/_config.yaml`` records: the shard settings and the sources (run-relative)."""
    root = storage.absolute(run_root).rstrip("/") + "/"
    names = sorted(
        p[len(root) :] if p.startswith(root) else p for p in map(storage.absolute, sources)
    )
    return yaml.safe_load(dump_yaml({"config": to_dict(config), "sources": names}))


def check_settings(shards: StageDir, record: dict) -> None:
    """A :class:`ConfigError` if the run's shards were begun with other settings or sources."""
    saved_path = shards.path / CONFIG
    if not storage.exists(saved_path):
        return
    saved = yaml.safe_load(storage.read_bytes(saved_path)) or {}
    if saved == record:
        return
    changed = sorted(
        k
        for k in {*record["config"], *saved.get("config", {})}
        if record["config"].get(k) != saved.get("config", {}).get(k)
    )
    if saved.get("sources") != record["sources"]:
        changed.append("sources")
    root = shards.path.parent
    raise ConfigError(
        f"{shards.path} was begun with other shard settings (changed: {', '.join(changed)}); "
        f"remove {root / PLAN}, {root / SAMPLES} and {shards.path} to rebuild, or use another run "
        "name"
    )


def completion_time() -> str:
    """Now in UTC, or ``SOURCE_DATE_EPOCH`` when set (the reproducible-builds convention), so that
    two runs of one pipeline can write byte-identical manifests."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (
        datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_shards(cfg: CurationConfig, engine: Engine, sources: list | None = None) -> dict:
    """Write the run's LVD shards from ``sources`` (SHARD_SOURCE Parquet files; default: the
    run's ``retrieved_images/``); returns the stats of ``shard_plan``, ``shard_samples`` and
    ``shards``. A finished run is skipped, an interrupted one resumes."""
    run, config = cfg.run_dir, cfg.shards
    sources = check_sources(default_sources(cfg) if sources is None else list(sources))
    shards = run.stage(SHARDS)
    record = settings_record(config, sources, run.root)
    check_settings(shards, record)
    if shards.is_complete():
        logger.info("shards already complete in %s; skipping", shards.path)
        return {
            PLAN: run.stage(PLAN).read_stats(),
            SAMPLES: run.stage(SAMPLES).read_stats(),
            SHARDS: shards.read_stats(),
        }
    run.save_config(cfg)
    shards.path.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(shards.path / CONFIG, dump_yaml(record).encode())
    stats = {PLAN: plan(cfg, sources)}
    planned = run.stage(PLAN).outputs()
    prepared = run.stage(SAMPLES)
    stats[SAMPLES] = run_stage(StageSpec(ShardSampleStage, config), planned, prepared, engine)

    start = time.perf_counter()
    swept = sweep_temp_files(shards.path)
    if swept:
        logger.info("removed %d temp file(s) left by an interrupted run", swept)
    stems = [storage.as_path(p).stem for p in planned]
    done = [s for s in stems if committed(shards, s)]
    logger.info("shards: %d to write, %d already done", len(stems) - len(done), len(done))
    for stem in stems:
        if stem not in done:
            storage.delete(shards.shard_marker(stem))  # a marker naming other files: not done
            pack(prepared.shard_output(stem), stem, shards, config)
    markers = [committed(shards, s) for s in stems]
    sizes = sum(m["output_size"] + (m["index_size"] or 0) for m in markers)
    plan_stats = stats[PLAN]
    stats[SHARDS] = shards.merge_shard_stats(
        format=config.format,
        samples_per_shard=config.samples_per_shard,
        seed=config.seed,
        max_side=config.max_side,
        jpeg_quality=config.jpeg_quality,
        row_group_size=config.row_group_size,
        source_rows=plan_stats.get("source_rows"),
        **{k: v for k, v in plan_stats.items() if k.startswith("skipped_")},
        bytes=sizes,
        completed_at=completion_time(),
        seconds=round(time.perf_counter() - start, 3),
    )
    shards.mark_complete()
    return stats


def shard_paths(run_root) -> list[Path]:
    """The committed shard files of a run, in name order (tars or Parquet shards)."""
    shards = StageDir(storage.join(run_root, SHARDS))
    found = []
    for marker_path in shards.markers():
        marker = committed(shards, marker_path.stem)
        if marker:
            found.append(shards.path / marker["output"])
    return found
