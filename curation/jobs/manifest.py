"""``manifest.json``: what a run's LVD shards hold, how to check them, and what made them.

:func:`build_manifest` reads a run folder whose ``shards/`` is complete and gathers, all valid
against ``schemas/manifest.schema.json`` (version 2):

* the shards (from their markers): path, sample count (Parquet footers: the tar's index, or the
  Parquet shard), size and sha256; for tars, the same for the index;
* the composition: samples per (seed dataset, mode), counted in the shards' own rows;
* the summaries of the stages that ran, read from their ``_stats.json`` (a stage that did not run,
  or did not finish, is simply absent): ``ingest/`` statuses, exact, near and copy dedup,
  decontamination against evaluation sets, the safety filters (``_safety.json``);
* every model id used: the ``model_id`` of each ``embed_*/`` folder's embeddings, and the safety
  filters' models;
* ``config_sha256``: the run's ``_config.yaml`` in canonical form (parsed, then JSON with sorted
  keys), so formatting does not change it.

Re-emitting from the same run folder gives the same bytes: nothing depends on when the manifest is
written (``created_at`` is the time the shards were completed, recorded in ``shards/_stats.json``)
or on where the folder lies (paths are relative to it). :func:`verify_manifest` re-reads every file
the manifest names and reports, one line per file, any that is missing, has another size or
checksum, or holds another number of samples (tar members counted, Parquet rows read from the
footer), and any shard file the manifest does not name.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from curation import storage
from curation.config import ConfigError
from curation.io import read_json
from curation.jobs.shards import SHARDS, committed
from curation.readers.input_shards import webdataset_key
from curation.rundir import CONFIG, RunDir, StageDir
from schemas import MANIFEST_VERSION, SchemaError, validate_manifest

MANIFEST = "manifest.json"
SAFETY_RECORD = "_safety.json"
CHUNK = 8 << 20


class ManifestError(FileNotFoundError):
    """The run folder has no complete shards to describe (a user error: run ``lvd shards``)."""


# ---------------------------------------------------------------------- files


def check_run_folder(run_root: str | Path) -> str:
    """``run_root`` as a string if it is an existing folder (URIs are taken as they are)."""
    text = str(run_root)
    if storage.is_uri(text):
        return text
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"run folder {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"run folder {path} is a file, not a folder")
    return text


def file_sha256(path) -> str:
    """The sha256 of a file (local or on a store), read in chunks."""
    digest = hashlib.sha256()
    with storage.open_input(path) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parquet_rows(path) -> int:
    """Rows of a Parquet file, from its footer."""
    with storage.open_input(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def tar_samples(path) -> int:
    """Samples of a WebDataset tar: the distinct keys of its file members."""
    with storage.open_input(path) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
        return len({webdataset_key(member.name) for member in tar if member.isfile()})


def _relative(run_root, path) -> str:
    root = storage.absolute(run_root).rstrip("/") + "/"
    return storage.absolute(path)[len(root) :]


def _file_entry(run_root, path) -> dict:
    return {
        "path": _relative(run_root, path),
        "size_bytes": storage.size(path),
        "sha256": file_sha256(path),
    }


# ---------------------------------------------------------------------- build


def _stats(run_root, stage: str) -> dict | None:
    folder = StageDir(storage.join(run_root, stage))
    return folder.read_stats() if folder.is_complete() else None


def _counts(stats: dict, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
    return {
        k[len(prefix) :]: int(v)
        for k, v in sorted(stats.items())
        if k.startswith(prefix) and k[len(prefix) :] not in skip and isinstance(v, int)
    }


def _dedup_step(stats: dict) -> dict:
    return {
        "images_in": int(stats.get("rows_in", 0)),
        "images_kept": int(stats.get("rows_out", 0)),
        "removed": _counts(stats, "reason_", skip=("kept",)),
    }


def _stage_config(run_root, stage: str) -> dict:
    path = storage.join(run_root, stage, CONFIG)
    if not storage.exists(path):
        return {}
    saved = yaml.safe_load(storage.read_bytes(path)) or {}
    return (saved.get("config") or {}) if isinstance(saved, dict) else {}


def curation_summary(run_root) -> dict:
    """``ingest``, ``dedup`` and ``decontamination`` from the stages that finished."""
    summary: dict[str, Any] = {}
    ingest = _stats(run_root, "ingest")
    if ingest is not None:
        summary["ingest"] = {
            "images_in": int(ingest.get("rows_in", 0)),
            "status": _counts(ingest, "status_"),
        }
    dedup: dict[str, Any] = {}
    exact = _stats(run_root, "dedup_exact")
    if exact is not None:
        dedup["exact"] = _dedup_step(exact)
    near = _stats(run_root, "dedup_near")
    if near is not None:
        dedup["near"] = _dedup_step(near)
        if isinstance(near.get("max_distance"), int):
            dedup["near"]["max_distance"] = near["max_distance"]
    copy = _stats(run_root, "dedup_copy")
    if copy is not None:
        dedup["copy"] = _dedup_step(copy)
        dedup["copy"]["removed"].pop("eval_contaminated", None)  # under decontamination
        scoring = copy.get("scoring") or {}
        if isinstance(copy.get("pairs"), int):
            dedup["copy"]["pairs"] = copy["pairs"]
        if scoring.get("kind"):
            dedup["copy"]["score"] = str(scoring["kind"])
        if "threshold" in scoring:
            dedup["copy"]["threshold"] = scoring["threshold"]
        eval_sets = [
            {
                "name": name[len("eval_") :],
                **{k: int(value[k]) for k in ("eval_images", "pool_images_matched") if k in value},
            }
            for name, value in sorted(copy.items())
            if name.startswith("eval_") and isinstance(value, dict)
        ]
        summary["decontamination"] = {
            "eval_threshold": _stage_config(run_root, "dedup_copy").get("eval_threshold"),
            "images_removed": int(copy.get("reason_eval_contaminated", 0)),
            "eval_sets": eval_sets,
        }
    if dedup:
        summary["dedup"] = dedup
    return summary


def stage_folders(run_root, prefix: str) -> list[str]:
    """Names of the run's stage folders that start with ``prefix``, sorted."""
    fs, inner = storage.filesystem(run_root)
    selector = pafs.FileSelector(inner, allow_not_found=True, recursive=False)
    names = {
        posixpath.basename(info.path.rstrip("/"))
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory
    }
    return sorted(n for n in names if n.startswith(prefix))


def model_ids(run_root) -> list[dict]:
    """Every model id the run used: each ``embed_*`` folder's embeddings, the safety filters."""
    models = set()
    for name in stage_folders(run_root, "embed_"):
        for path in StageDir(storage.join(run_root, name)).outputs():
            if "model_id" not in storage.read_schema(path).names:
                continue
            column = storage.read_table(path, columns=["model_id"]).column("model_id")
            models.update((name, m) for m in pc.unique(column).to_pylist() if m)
    safety = storage.join(run_root, SAFETY_RECORD)
    if storage.exists(safety):
        for item in read_json(safety).get("filters", []):
            if item.get("model_id"):
                models.add((str(item.get("filter")), str(item["model_id"])))
    return [{"stage": stage, "model_id": model} for stage, model in sorted(models)]


def config_sha256(run_root) -> str | None:
    """sha256 of the run's saved config in canonical form (None when none was saved)."""
    saved = RunDir(run_root).saved_config()
    if saved is None:
        return None
    data = yaml.safe_load(storage.read_bytes(saved))
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def composition(tables: list[pa.Table]) -> list[dict]:
    """Samples per (seed dataset, mode) over tables with those columns."""
    if not tables:
        return []
    table = pa.concat_tables([t.select(["seed_dataset", "mode"]) for t in tables])
    grouped = table.group_by(["seed_dataset", "mode"]).aggregate([([], "count_all")])
    rows = [
        {"seed_dataset": r["seed_dataset"], "mode": r["mode"], "num_samples": r["count_all"]}
        for r in grouped.to_pylist()
    ]
    return sorted(rows, key=lambda r: (r["seed_dataset"], r["mode"]))


def build_manifest(run_root) -> dict:
    """The manifest of the run folder ``run_root`` (a path or a URI); see the module docstring."""
    shards_dir = StageDir(storage.join(run_root, SHARDS))
    if not shards_dir.is_complete():
        raise ManifestError(
            f"{shards_dir.path} is not complete (no _SUCCESS): run `lvd shards` first"
        )
    stats = shards_dir.read_stats()
    fmt = stats.get("format")
    if fmt not in ("webdataset", "parquet"):
        raise ManifestError(f"{shards_dir.path / '_stats.json'} names no shard format")
    entries, tables = [], []
    for marker_path in shards_dir.markers():
        marker = committed(shards_dir, marker_path.stem)
        if marker is None:
            raise ManifestError(
                f"{shards_dir.path}: shard {marker_path.stem} does not match its marker; "
                "rerun `lvd shards`"
            )
        shard = shards_dir.path / marker["output"]
        entry = _file_entry(run_root, shard)
        counted = shards_dir.path / (marker.get("index") or marker["output"])
        entry["num_samples"] = parquet_rows(counted)
        if marker.get("index"):
            entry["index"] = _file_entry(run_root, counted)
        entries.append(entry)
        tables.append(storage.read_table(counted, columns=["seed_dataset", "mode"]))
    manifest: dict[str, Any] = {
        "schema_version": MANIFEST_VERSION,
        "name": storage.as_path(storage.absolute(run_root)).name,
        "format": fmt,
        "num_samples": sum(e["num_samples"] for e in entries),
        "size_bytes": sum(
            e["size_bytes"] + e.get("index", {}).get("size_bytes", 0) for e in entries
        ),
        "sharding": {
            "samples_per_shard": stats["samples_per_shard"],
            "seed": stats["seed"],
            "max_side": stats.get("max_side"),
            **{
                k: stats[k] for k in ("jpeg_quality", "row_group_size", "source_rows") if k in stats
            },
            "skipped": _counts(stats, "skipped_status_"),
            "dropped": _counts(stats, "dropped_"),
        },
        "shards": entries,
        "composition": composition(tables),
        **curation_summary(run_root),
        "models": model_ids(run_root),
    }
    if stats.get("completed_at"):
        manifest["created_at"] = stats["completed_at"]
    digest = config_sha256(run_root)
    if digest:
        manifest["config_sha256"] = digest
    safety = storage.join(run_root, SAFETY_RECORD)
    if storage.exists(safety):
        manifest["safety"] = read_json(safety).get("filters", [])
    validate_manifest(manifest)
    return manifest


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def write_manifest(run_root) -> dict:
    """Write ``<run_root>/manifest.json`` (whole, under its final name) and return it."""
    manifest = build_manifest(run_root)
    storage.write_bytes(storage.join(run_root, MANIFEST), manifest_bytes(manifest))
    return manifest


# ---------------------------------------------------------------------- verify


def _check_file(run_root, entry: dict) -> str | None:
    """The first way the file ``entry`` names differs from it, or None."""
    path = storage.join(run_root, entry["path"])
    found = storage.size(path)
    if found is None:
        return f"{entry['path']}: missing"
    if found != entry["size_bytes"]:
        return f"{entry['path']}: {found} bytes, the manifest says {entry['size_bytes']}"
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        return f"{entry['path']}: sha256 {digest}, the manifest says {entry['sha256']}"
    return None


def _check_count(run_root, path: str, expected: int, count) -> str | None:
    try:
        found = count(storage.join(run_root, path))
    except (tarfile.TarError, pa.ArrowException, OSError, ValueError) as exc:
        return f"{path}: cannot be read ({type(exc).__name__}: {exc})"
    if found != expected:
        return f"{path}: holds {found} samples, the manifest says {expected}"
    return None


def _check_shard(run_root, entry: dict, fmt: str) -> list[str]:
    problem = _check_file(run_root, entry)
    count = tar_samples if fmt == "webdataset" else parquet_rows
    problem = problem or _check_count(run_root, entry["path"], entry["num_samples"], count)
    problems = [problem] if problem else []
    index = entry.get("index")
    if fmt == "webdataset" and index is None:
        problems.append(f"{entry['path']}: the manifest names no index for this tar")
    elif index is not None:
        problem = _check_file(run_root, index) or _check_count(
            run_root, index["path"], entry["num_samples"], parquet_rows
        )
        if problem:
            problems.append(problem)
    return problems


def verify_manifest(run_root) -> list[str]:
    """Re-check the run's shards against its ``manifest.json``: one line per file that is missing,
    differs in size, sha256 or sample count, or is a shard file the manifest does not name; also a
    manifest that breaks its schema or whose totals disagree with its shards. Empty when clean."""
    path = storage.join(run_root, MANIFEST)
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} does not exist: write it with `lvd manifest RUN_DIR`")
    try:
        manifest = json.loads(storage.read_bytes(path))
        validate_manifest(manifest)
    except (ValueError, SchemaError) as exc:  # JSONDecodeError is a ValueError
        return [f"{MANIFEST}: {exc}"]
    problems, listed = [], set()
    for entry in manifest["shards"]:
        listed.add(entry["path"])
        listed.update([entry["index"]["path"]] if "index" in entry else [])
        problems += _check_shard(run_root, entry, manifest["format"])
    shards_dir = storage.join(run_root, SHARDS)
    for found in storage.list_files(shards_dir):
        name = storage.as_path(found).name
        relative = f"{SHARDS}/{name}"
        if not name.startswith(("_", ".")) and relative not in listed:
            problems.append(f"{relative}: a shard file the manifest does not name")
    total = sum(e["num_samples"] for e in manifest["shards"])
    if total != manifest["num_samples"]:
        problems.append(
            f"{MANIFEST}: num_samples {manifest['num_samples']}, its shards hold {total}"
        )
    return problems
