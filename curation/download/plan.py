"""The URL plan: the URL list normalised into the shards img2dataset will fetch, frozen on disk.

``download/_urls/`` holds ``fetch/NNNNN.parquet`` (one file per img2dataset shard, so shard ``i`` is
file ``i``), ``blocked.parquet`` (DOWNLOADED_SAMPLE rows for URLs refused by the network policy,
never requested) and ``plan.json`` (counts and the resume signature), then ``_SUCCESS``. A rerun
reuses the frozen plan instead of rebuilding it, so sample keys never move even if DNS answers do;
and it refuses to resume when the URL list or a setting in the signature changed.

Keys follow img2dataset's scheme (shard id and row index, zero-padded) so that the keys of refused
URLs, numbered in shards after the fetched ones, never collide with downloaded ones.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.config import ConfigError
from curation.download.config import StoragePath
from curation.download.hosts import round_robin_order, url_host
from curation.download.network_guard import NetworkPolicy, check_urls
from curation.io import read_json, write_bytes_atomic, write_json_atomic, write_parquet_atomic
from schemas import DOWNLOADED_SAMPLE_SCHEMA

logger = logging.getLogger(__name__)

SHARD_DIGITS = 5  # img2dataset's default oom_shard_count
PLAN_FILE = "plan.json"
SUCCESS = "_SUCCESS"


class DownloadResumeError(ConfigError):
    """A rerun asks for something other than what the interrupted run started."""


def sample_key(shard_id: int, index: int, samples_per_shard: int) -> str:
    """The key img2dataset gives row ``index`` of shard ``shard_id`` (its documented format)."""
    digits = math.ceil(math.log10(samples_per_shard)) if samples_per_shard > 1 else 0
    return f"{shard_id * 10**digits + index:0{digits + SHARD_DIGITS}d}"


def row_index(key: str, samples_per_shard: int) -> int:
    """The row of its shard that ``key`` (made by :func:`sample_key`) stands for."""
    digits = math.ceil(math.log10(samples_per_shard)) if samples_per_shard > 1 else 0
    return int(key) % 10**digits


@dataclass(frozen=True)
class UrlPlan:
    directory: StoragePath
    samples_per_shard: int
    n_fetch_shards: int
    n_rows: int
    n_refused: int
    extra_columns: tuple[str, ...]

    @property
    def fetch_dir(self) -> StoragePath:
        return self.directory / "fetch"

    @property
    def blocked_file(self) -> StoragePath:
        return self.directory / "blocked.parquet"

    def fetch_file(self, shard_id: int) -> StoragePath:
        return self.fetch_dir / f"{shard_id:0{SHARD_DIGITS}d}.parquet"


def _refused_rows(table: pa.Table, refusals: list, first_shard: int, per_shard: int) -> pa.Table:
    keys, statuses, messages = [], [], []
    for i, (status, message) in enumerate(refusals):
        keys.append(sample_key(first_shard + i // per_shard, i % per_shard, per_shard))
        statuses.append(status)
        messages.append(message)
    n = len(keys)
    columns = {
        "key": pa.array(keys, pa.string()),
        "url": table.column("url"),
        "caption": table.column("caption"),
        "status": pa.array(statuses, pa.string()),
        "error_message": pa.array(messages, pa.string()),
    }
    for field in DOWNLOADED_SAMPLE_SCHEMA:
        if field.name not in columns:
            columns[field.name] = pa.nulls(n, field.type)
    return pa.table(columns).select(DOWNLOADED_SAMPLE_SCHEMA.names).cast(DOWNLOADED_SAMPLE_SCHEMA)


def build_plan(
    directory: str | os.PathLike,
    table: pa.Table,
    *,
    samples_per_shard: int,
    round_robin: bool,
    policy: NetworkPolicy,
    signature: dict,
) -> UrlPlan:
    """Check, order and shard ``table`` (url, caption, extras) into ``directory``; see module doc."""
    if samples_per_shard < 1:
        raise ConfigError(f"download.number_sample_per_shard must be >= 1, got {samples_per_shard}")
    directory = storage.as_path(directory)
    storage.delete_tree(directory)  # an unfinished plan: nothing was fetched from it yet
    urls = table.column("url").to_pylist()
    refusals = check_urls(urls, policy)
    refused = pa.array([r is not None for r in refusals], pa.bool_())
    fetch = table.filter(pc.invert(refused))
    if round_robin and fetch.num_rows:
        fetch = fetch.take(
            round_robin_order([url_host(u) for u in fetch.column("url").to_pylist()])
        )
    n_fetch_shards = math.ceil(fetch.num_rows / samples_per_shard)
    extra = tuple(c for c in table.column_names if c not in ("url", "caption"))
    plan = UrlPlan(directory, samples_per_shard, n_fetch_shards, table.num_rows, 0, extra)
    for shard_id in range(n_fetch_shards):
        chunk = fetch.slice(shard_id * samples_per_shard, samples_per_shard)
        write_parquet_atomic(plan.fetch_file(shard_id), chunk, chunk.schema)
    blocked = _refused_rows(
        table.filter(refused),
        [r for r in refusals if r is not None],
        n_fetch_shards,
        samples_per_shard,
    )
    write_parquet_atomic(plan.blocked_file, blocked, DOWNLOADED_SAMPLE_SCHEMA)
    info = {
        "rows": table.num_rows,
        "refused": blocked.num_rows,
        "fetch_shards": n_fetch_shards,
        "samples_per_shard": samples_per_shard,
        "extra_columns": list(extra),
        "signature": signature,
    }
    write_json_atomic(directory / PLAN_FILE, info)
    write_bytes_atomic(directory / SUCCESS, b"")
    logger.info(
        "URL plan: %d URL(s) in %d shard(s), %d refused",
        fetch.num_rows,
        n_fetch_shards,
        blocked.num_rows,
    )
    return load_plan(directory)


def load_plan(directory: str | os.PathLike) -> UrlPlan | None:
    """The finished plan in ``directory``, or None."""
    directory = storage.as_path(directory)
    if not storage.exists(directory / SUCCESS):
        return None
    info = read_json(directory / PLAN_FILE)
    return UrlPlan(
        directory,
        info["samples_per_shard"],
        info["fetch_shards"],
        info["rows"],
        info["refused"],
        tuple(info["extra_columns"]),
    )


def check_signature(directory: str | os.PathLike, signature: dict) -> None:
    """Raise :class:`DownloadResumeError` if the plan in ``directory`` was made differently."""
    directory = storage.as_path(directory)
    saved = read_json(directory / PLAN_FILE)["signature"]
    changed = sorted(k for k in set(saved) | set(signature) if saved.get(k) != signature.get(k))
    if changed:
        details = "; ".join(f"{k}: was {saved.get(k)!r}, now {signature.get(k)!r}" for k in changed)
        raise DownloadResumeError(
            f"{directory.parent} was started with other settings ({details}). A resume must use "
            "the same URL list and settings; choose a new run name to start afresh."
        )
