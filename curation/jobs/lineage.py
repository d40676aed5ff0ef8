"""A sample's lineage, from its URL to its shard, read back from a run folder (``lvd lineage``).

Every stage already records its part: the download (URL, status, error), the image record (sha256,
size, where the bytes are), hash dedup (which keys were dropped as its exact / near copies), copy
dedup (its component, the representative and the other members), retrieval (which seed datasets
chose it, seed key, rank, similarity, cluster) and the shard index (which shard, which member).
This module only joins them by key; a stage that did not run is left out of the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.rundir import RunDir

MAX_MEMBERS = 50  # other members of a copy-dedup component listed per key


def _rows(paths: list, keys: list[str], column: str = "key") -> list[dict]:
    """Rows of ``paths`` whose ``column`` is one of ``keys`` (nothing when there are no paths)."""
    if not paths:
        return []
    table = storage.read_table(paths)
    if column not in table.column_names:
        return []
    return table.filter(pc.is_in(table.column(column), value_set=pa.array(keys))).to_pylist()


def _parquet_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("_"))


def _complete(run: RunDir, name: str) -> list:
    stage = run.stage(name)
    return stage.outputs() if stage.path.is_dir() else []


def shard_locations(run: RunDir, keys: list[str]) -> dict[str, dict]:
    """Where each key lies in ``<run>/shards/``: tar + member from the shard indexes, or the
    Parquet shard holding its bytes."""
    found: dict[str, dict] = {}
    for path in _parquet_files(run.root / "shards"):
        names = storage.read_schema(path).names
        wanted = ("key", "shard", "member", "offset", "size", "seed_dataset", "mode", "seed_key")
        columns = [c for c in wanted if c in names]
        if "key" not in columns:
            continue
        table = storage.read_table(path, columns=columns)
        table = table.filter(pc.is_in(table.column("key"), value_set=pa.array(keys)))
        for row in table.to_pylist():
            row.setdefault("shard", path.name)
            found[row.pop("key")] = row
    return found


def copy_dedup(run: RunDir, keys: list[str]) -> dict[str, dict]:
    """Each key's copy-dedup component: representative, decision and the other members."""
    paths = _complete(run, "dedup_copy")
    if not paths:
        return {}
    table = storage.read_table(paths)
    mine = table.filter(pc.is_in(table.column("key"), value_set=pa.array(keys))).to_pylist()
    result = {}
    for row in mine:
        members = table.filter(pc.equal(table.column("component_id"), row["component_id"]))
        others = sorted(k for k in members.column("key").to_pylist() if k != row["key"])
        result[row["key"]] = {
            "component_id": row["component_id"],
            "representative_key": row["representative_key"],
            "keep": row["keep"],
            "reason": row["reason"],
            "other_members": others[:MAX_MEMBERS],
            "other_member_count": len(others),
        }
    return result


def hash_duplicates(run: RunDir, keys: list[str]) -> dict[str, list[dict]]:
    """Keys dropped by exact or near-exact dedup as copies of each key."""
    dropped: dict[str, list[dict]] = {}
    for stage in ("dedup_exact", "dedup_near"):
        for row in _rows(_complete(run, stage), keys, column="duplicate_of"):
            dropped.setdefault(row["duplicate_of"], []).append(
                {"key": row["key"], "reason": row["reason"], "hamming": row["hamming_distance"]}
            )
    return dropped


def lineage(run: RunDir, keys: list[str]) -> list[dict[str, Any]]:
    """One record per key: what each stage of ``run`` says about it (see the module docstring)."""
    if not run.root.is_dir():
        raise FileNotFoundError(f"run folder {run.root} does not exist")
    selection = _rows(_complete(run, "retrieval"), keys)
    sources = {r["key"]: r for r in _rows(_complete(run, "retrieved_images"), keys)}
    # Seed images copied as is carry their seed key; pool images their own key upstream.
    upstream = {
        key: (sources[key]["seed_key"] if sources.get(key, {}).get("mode") == "as_is" else key)
        for key in keys
    }
    pool_keys = sorted(set(upstream.values()))
    records = {r["key"]: r for r in _rows(_complete(run, "unique_images"), pool_keys)}
    downloads = {r["key"]: r for r in _rows(_download_parts(run), pool_keys)}
    copies = copy_dedup(run, pool_keys)
    hashed = hash_duplicates(run, pool_keys)
    shards = shard_locations(run, keys)
    out = []
    for key in keys:
        source = sources.get(key) or records.get(upstream[key]) or {}
        download = downloads.get(upstream[key])
        entry: dict[str, Any] = {
            "key": key,
            "url": (download or {}).get("url") or source.get("url"),
            "sha256": source.get("sha256"),
            "width": source.get("width"),
            "height": source.get("height"),
            "source_file": source.get("source_file"),
        }
        if download:
            entry["download"] = {
                "status": download.get("status"),
                "error_message": download.get("error_message"),
            }
        if upstream[key] in hashed:
            entry["hash_duplicates_dropped"] = hashed[upstream[key]]
        if upstream[key] in copies:
            entry["copy_dedup"] = copies[upstream[key]]
        picked = [
            {
                k: r[k]
                for k in ("seed_dataset", "mode", "seed_key", "rank", "similarity", "cluster_id")
            }
            for r in selection
            if r["key"] == key
        ]
        shard = shards.get(key)
        if not picked and shard and shard.get("mode"):  # the shard index's own provenance
            picked = [{k: shard[k] for k in ("seed_dataset", "mode", "seed_key")}]
        if picked:
            entry["retrieval"] = picked
        if shard:
            entry["shard"] = {
                k: v for k, v in shard.items() if k not in ("seed_dataset", "mode", "seed_key")
            }
        entry["found"] = bool(source or download or picked or key in shards)
        out.append(entry)
    return out


def _download_parts(run: RunDir) -> list:
    from curation.download.config import DownloadLayout
    from curation.jobs.download import STAGE

    return DownloadLayout(run.root / STAGE).sample_parts()
