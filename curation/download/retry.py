"""``--retry-failed``: re-download only the failed samples of a run and merge them back.

An attempt lives in ``download/retries/NNN/``: a URL plan of the failed samples (each carrying its
original key and shard as extra columns), img2dataset's raw output for it, and one merged file per
original shard holding the recovered samples under their *original* keys (tar members renamed,
their ``.json`` rewritten), so a webdataset reader over all tars sees every key once. Then the
original shard's samples and encoded parts are rewritten to point at the recovered bytes.

Steps are ordered so that a killed attempt resumes: plan and raw output are incremental; the merged
files are written before ``_MERGE_READY``; applying the merge to the parts is idempotent (rows are
replaced by key); ``_SUCCESS`` comes last. Downstream ingest markers of changed shards are removed so
the next ``run_ingest`` redoes them.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.download.config import DownloadLayout
from curation.download.img2dataset_job import run_img2dataset
from curation.download.kill_points import kill_point
from curation.download.network_guard import NetworkPolicy
from curation.download.plan import UrlPlan, build_plan, load_plan, row_index
from curation.download.shards import STATUS_SUCCESS, finished_shards, shard_stem
from curation.io import (
    atomic_path,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.readers.tar_index import tar_members
from curation.safe_names import member_name
from schemas import DOWNLOADED_SAMPLE_SCHEMA, ENCODED_IMAGE_SCHEMA

logger = logging.getLogger(__name__)

MERGE_READY = "_MERGE_READY"
SUCCESS = "_SUCCESS"
ORIGINAL_KEY = "lvd_key"
ORIGINAL_PART = "lvd_part"
# Stages whose outputs depend on the download parts; their markers are removed on a merge.
DOWNSTREAM_PER_SHARD = ("ingest", "phash", "unique_images")
DOWNSTREAM_GLOBAL = ("dedup_exact", "dedup_near")


def _attempt_dir(layout: DownloadLayout) -> Path:
    """The unfinished attempt to resume, or a new one."""
    attempts = sorted(p for p in layout.retries.glob("[0-9][0-9][0-9]") if p.is_dir())
    if attempts and not (attempts[-1] / SUCCESS).is_file():
        return attempts[-1]
    return layout.retries / f"{len(attempts) + 1:03d}"


def _part_id(path: Path) -> int | None:
    stem = path.stem
    return int(stem[len("part-") :]) if stem.startswith("part-") else None


def failed_candidates(layout: DownloadLayout, base: UrlPlan, statuses: tuple[str, ...]) -> pa.Table:
    """The URL plan rows (url, caption, extra columns) of the failed samples, with each one's
    original key and part; read from the frozen fetch files, so every list column comes along."""
    tables = []
    for part in layout.sample_parts():
        part_id = _part_id(part)
        if part_id is None:  # refused by policy: never fetched, not retried
            continue
        samples = pq.read_table(part, columns=["key", "status"])
        failed = samples.filter(pc.is_in(samples.column("status"), pa.array(list(statuses))))
        if not failed.num_rows:
            continue
        keys = failed.column("key").to_pylist()
        rows = [row_index(key, base.samples_per_shard) for key in keys]
        table = pq.read_table(base.fetch_file(part_id)).take(rows)
        table = table.append_column(ORIGINAL_KEY, pa.array(keys, pa.string()))
        tables.append(
            table.append_column(ORIGINAL_PART, pa.array([part_id] * len(keys), pa.int64()))
        )
    if not tables:
        return pa.table({"url": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")


def _recovered(raw_dir: Path, n_shards: int) -> pa.Table:
    """Successful rows of the attempt's raw shards (with their retry key and original key)."""
    tables = []
    for shard_id in range(n_shards):
        meta = pq.read_table(raw_dir / f"{shard_stem(shard_id)}.parquet")
        meta = meta.filter(pc.equal(meta.column("status"), STATUS_SUCCESS))
        if meta.num_rows:
            tables.append(meta.append_column("retry_shard", pa.array([shard_id] * meta.num_rows)))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _write_merged_tar(target: Path, rows: list[dict], raw_dir: Path) -> None:
    """Copy each recovered sample's members from the retry tars, renamed to the original key."""
    by_shard: dict[int, dict[str, str]] = {}
    for row in rows:
        by_shard.setdefault(row["retry_shard"], {})[row["key"]] = row[ORIGINAL_KEY]
    with atomic_path(target) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as out:
        for shard_id, renames in sorted(by_shard.items()):
            with tarfile.open(raw_dir / f"{shard_stem(shard_id)}.tar", "r:") as source:
                for info in source:
                    retry_key, _, extension = info.name.partition(".")
                    if not info.isfile() or retry_key not in renames:
                        continue
                    data = source.extractfile(info).read()
                    if extension == "json":
                        meta = json.loads(data)
                        meta["key"] = renames[retry_key]
                        data = json.dumps(meta, indent=4).encode()
                    copy = tarfile.TarInfo(member_name(renames[retry_key], extension))
                    copy.size, copy.mtime, copy.mode = len(data), info.mtime, 0o444
                    out.addfile(copy, io.BytesIO(data))


def _write_merged_parquet(target: Path, rows: pa.Table) -> None:
    table = rows.set_column(rows.schema.get_field_index("key"), "key", rows[ORIGINAL_KEY])
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


def _apply_merge(
    layout: DownloadLayout, part_id: int, merged: Path, rows: pa.Table, fmt: str, encode_format: str
) -> None:
    """Rewrite one original part with its recovered rows (idempotent: rows replaced by key)."""
    keys = rows[ORIGINAL_KEY]
    source = str(merged.resolve())
    members = [member_name(k, encode_format) for k in keys.to_pylist()]
    if fmt == "webdataset":
        index = tar_members(merged)
        offsets = [index[m] for m in members]
        images = pa.nulls(rows.num_rows, pa.binary())
    else:
        images = pc.cast(rows[encode_format], pa.binary())
        offsets = [(None, n) for n in pc.binary_length(images).to_pylist()]
    n = rows.num_rows
    recovered = pa.table(
        {
            "key": keys,
            "url": rows["url"],
            "caption": rows["caption"]
            if "caption" in rows.column_names
            else pa.nulls(n, pa.string()),
            "status": pa.array([STATUS_SUCCESS] * n, pa.string()),
            "error_message": pa.nulls(n, pa.string()),
            "sha256": rows["sha256"],
            **{
                c: pc.cast(rows[c], pa.int32())
                for c in ("width", "height", "original_width", "original_height")
            },
            "source_file": pa.array([source] * n, pa.string()),
            "source_member": pa.array(members if fmt == "webdataset" else [None] * n, pa.string()),
        },
        schema=DOWNLOADED_SAMPLE_SCHEMA,
    )
    encoded_new = pa.table(
        {
            "key": keys,
            "url": rows["url"],
            "image": images,
            "source_file": pa.array([source] * n, pa.string()),
            "source_offset": pa.array([o for o, _ in offsets], pa.int64()),
            "source_size": pa.array([s for _, s in offsets], pa.int64()),
        },
        schema=ENCODED_IMAGE_SCHEMA,
    )
    value_set = keys.combine_chunks()
    samples_path = layout.part(layout.samples, part_id)
    samples = pq.read_table(samples_path).cast(DOWNLOADED_SAMPLE_SCHEMA)
    samples = samples.filter(pc.invert(pc.is_in(samples["key"], value_set=value_set)))
    samples = pa.concat_tables([samples, recovered]).sort_by("key")
    encoded_path = layout.part(layout.encoded, part_id)
    encoded = pq.read_table(encoded_path).cast(ENCODED_IMAGE_SCHEMA)
    encoded = encoded.filter(pc.invert(pc.is_in(encoded["key"], value_set=value_set)))
    encoded = pa.concat_tables([encoded, encoded_new]).sort_by("key")
    write_parquet_atomic(samples_path, samples, DOWNLOADED_SAMPLE_SCHEMA)
    write_parquet_atomic(encoded_path, encoded, ENCODED_IMAGE_SCHEMA)


def invalidate_downstream(run_root: Path, part_ids: list[int]) -> None:
    """Forget downstream results that a merge made stale, so the next run redoes them."""
    for stage in DOWNSTREAM_PER_SHARD:
        for part_id in part_ids:
            (run_root / stage / "_shards" / f"part-{part_id:05d}.json").unlink(missing_ok=True)
        (run_root / stage / "_SUCCESS").unlink(missing_ok=True)
    for stage in DOWNSTREAM_GLOBAL:
        (run_root / stage / "_SUCCESS").unlink(missing_ok=True)
    if (run_root / "unique_images" / "_shards").is_dir():  # any dedup change touches every shard
        shutil.rmtree(run_root / "unique_images" / "_shards")


def retry_failed(cfg, layout: DownloadLayout, distributor: str) -> dict | None:
    """One retry attempt (or the resumption of an unfinished one); returns its summary."""
    settings = cfg.download
    start = time.perf_counter()
    attempt = _attempt_dir(layout)
    base_plan = load_plan(layout.urls)
    plan = load_plan(attempt / "_urls")
    if plan is None:
        candidates = failed_candidates(layout, base_plan, settings.retry_statuses)
        if not candidates.num_rows:
            logger.info(
                "run %s: no samples with status in %s; nothing to retry",
                cfg.name,
                list(settings.retry_statuses),
            )
            return None
        plan = build_plan(
            attempt / "_urls",
            candidates,
            samples_per_shard=settings.number_sample_per_shard,
            round_robin=settings.host_round_robin,
            policy=NetworkPolicy(settings.allow_private_networks),
            signature={"retry_statuses": list(settings.retry_statuses)},
        )
    raw = attempt / "raw"
    fmt = settings.output_format
    if not (attempt / MERGE_READY).is_file():
        if set(range(plan.n_fetch_shards)) - finished_shards(raw, fmt):
            raw.mkdir(parents=True, exist_ok=True)
            run_img2dataset(
                plan.fetch_dir,
                raw,
                settings,
                distributor=distributor,
                extra_columns=list(plan.extra_columns),
            )
        recovered = _recovered(raw, plan.n_fetch_shards)
        parts = sorted(set(recovered[ORIGINAL_PART].to_pylist())) if recovered.num_rows else []
        for part_id in parts:
            rows = recovered.filter(pc.equal(recovered[ORIGINAL_PART], part_id))
            if fmt == "webdataset":
                _write_merged_tar(attempt / f"{shard_stem(part_id)}.tar", rows.to_pylist(), raw)
            else:
                _write_merged_parquet(attempt / f"{shard_stem(part_id)}.parquet", rows)
        if recovered.num_rows:
            with atomic_path(attempt / "recovered.parquet") as tmp:
                pq.write_table(recovered, tmp)
        write_json_atomic(attempt / MERGE_READY, {"parts": parts, "recovered": recovered.num_rows})
    ready = read_json(attempt / MERGE_READY)
    kill_point("retry_merge_ready")
    if ready["recovered"]:
        recovered = pq.read_table(attempt / "recovered.parquet")
        for part_id in ready["parts"]:
            rows = recovered.filter(pc.equal(recovered[ORIGINAL_PART], part_id))
            suffix = "tar" if fmt == "webdataset" else "parquet"
            merged = attempt / f"{shard_stem(part_id)}.{suffix}"
            _apply_merge(layout, part_id, merged, rows, fmt, settings.encode_format)
            kill_point("retry_part_merged")
        invalidate_downstream(layout.root.parent, ready["parts"])
    summary = {
        "attempt": attempt.name,
        "candidates": plan.n_rows,
        "recovered": ready["recovered"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_bytes_atomic(attempt / SUCCESS, b"")
    logger.info(
        "retry %s of run %s: %d of %d recovered",
        attempt.name,
        cfg.name,
        ready["recovered"],
        plan.n_rows,
    )
    return summary
