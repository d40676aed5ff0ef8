"""Retrieval curation: pool images chosen because they resemble a seed dataset (LVD-142M, SPEC.md §1).

Each seed dataset of the curation config has a mode:

* ``as_is``: the seed images themselves go into the output (their own keys, ``<name>-<key>``).
* ``sample``: the ``n`` nearest pool images of every seed image (cosine of retrieval embeddings;
  N = 4 in the paper, 32 for ImageNet-1k). The search is sharded: :class:`SeedSearchStage` runs
  once per pool embedding shard (one engine task each, so the pool is never loaded whole into one
  process) and keeps each seed image's ``n`` best in that shard; :func:`merge_sample_candidates`
  keeps the ``n`` best over all shards, which are exactly the global ``n`` nearest.
* ``cluster``: ``m`` pool images from the k-means cluster of each seed image, for clusters holding
  at least ``min_seeds`` seed images (the paper: 10,000 images from every cluster holding more than
  3 seed images, of 100,000 clusters). Which ``m``: a seeded random draw from the cluster.
* ``balanced``: no seed images: a pool sample of ``size`` images, balanced over the hierarchical
  k-means tree (Vo et al. 2024, SPEC.md §3; :mod:`curation.index.kmeans`).

A ``quota`` caps what one seed dataset contributes (the paper caps cluster retrieval at 1M per
dataset): rows are kept best rank first, so every seed image keeps its nearest hit before any gets
a second. The union over seed datasets keeps every (image, seed) row in RETRIEVAL_SELECTION, so a
team can see which seeds chose an image ("collisions"); the shard writer takes each image once,
with the provenance of its first row in config order (:func:`first_provenance`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.index.knn import cross_pairs
from curation.readers.embeddings import embedded_rows
from curation.stages.base import Resources
from schemas import RETRIEVAL_SELECTION_SCHEMA, embedding_schema

MODES = ("as_is", "sample", "cluster", "balanced")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class SeedDataset:
    """One row of the curation config: a seed dataset and how it is used."""

    name: str
    mode: Literal["as_is", "sample", "cluster", "balanced"] = "sample"
    images: Path | None = None  # a folder of seed images (packed and embedded by the job)
    embeddings: str | None = None  # a folder of EMBEDDING shards of the seed images, made already
    n: int = 4  # sample: nearest pool images per seed image
    m: int = 10_000  # cluster: pool images per selected cluster
    min_seeds: int = 4  # cluster: clusters holding at least this many seed images (paper: > 3)
    size: int = 0  # balanced: images to draw from the pool
    quota: int | None = None  # at most this many images from this row

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.name or _UNSAFE.search(self.name) or self.name.startswith("."):
            raise ValueError(
                f"seed dataset name {self.name!r} must be letters, digits, '_', '-', '.'"
            )
        for field in ("n", "m", "min_seeds"):
            if getattr(self, field) < 1:
                raise ValueError(f"seed dataset {self.name}: {field} must be at least 1")
        if self.quota is not None and self.quota < 1:
            raise ValueError(f"seed dataset {self.name}: quota must be at least 1 (or null)")
        if self.mode == "balanced":
            if self.size < 1:
                raise ValueError(f"seed dataset {self.name}: mode balanced needs size >= 1")
        elif self.images is None and self.embeddings is None:
            raise ValueError(f"seed dataset {self.name}: give images (a folder) or embeddings")
        if self.mode == "as_is" and self.images is None:
            raise ValueError(f"seed dataset {self.name}: mode as_is needs its images folder")


@dataclass(frozen=True)
class RetrieveConfig:
    seeds: tuple[SeedDataset, ...] = ()
    pool: str = "embed_retrieval"  # the run stage holding the pool's retrieval embeddings
    index: Literal["auto", "flat", "ivf"] = "auto"  # per pool shard (auto: flat up to 200k rows)
    nprobe: int = 32
    rows_per_call: int = 65_536  # pool rows searched at a time by one task
    seed: int = 0  # cluster draws

    def __post_init__(self) -> None:
        check_choices(self)
        pairs = [(s.name, s.mode) for s in self.seeds]
        repeated = sorted({p for p in pairs if pairs.count(p) > 1})
        if repeated:
            raise ValueError(f"retrieve.seeds lists (name, mode) more than once: {repeated}")


def as_is_key(dataset: str, key: str) -> str:
    """The output key of a seed image copied as is: its dataset and key, one safe name."""
    return _UNSAFE.sub("_", f"{dataset}-{key}")


def selection_rows(
    keys: list[str] | pa.Array,
    dataset: str,
    mode: str,
    *,
    seed_keys=None,
    rank=None,
    similarity=None,
    cluster_id=None,
) -> pa.Table:
    """A RETRIEVAL_SELECTION table; columns not given are null."""
    n = len(keys)

    def column(values, kind):
        return pa.nulls(n, kind) if values is None else pa.array(values, kind)

    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "seed_dataset": pa.array([dataset] * n, pa.string()),
            "mode": pa.array([mode] * n, pa.string()),
            "seed_key": column(seed_keys, pa.string()),
            "rank": column(rank, pa.int32()),
            "similarity": column(similarity, pa.float32()),
            "cluster_id": column(cluster_id, pa.int64()),
        },
        schema=RETRIEVAL_SELECTION_SCHEMA,
    )


# ------------------------------------------------------------------ sample mode, sharded search


@dataclass(frozen=True)
class SeedSearchConfig:
    """What each search task needs: the seed sets in sample mode and the pool's width."""

    dim: int
    seeds: tuple[tuple[str, int, tuple[str, ...]], ...]  # (dataset, n, EMBEDDING shard paths)
    index: str = "auto"
    nprobe: int = 32
    rows_per_call: int = 65_536


class SeedSearchStage:
    """Pool EMBEDDING rows -> each seed image's ``n`` nearest among them (RETRIEVAL_SELECTION rows,
    ``rank`` left null: ranks are global, set by :func:`merge_sample_candidates`)."""

    name = "seed_search"
    output_schema = RETRIEVAL_SELECTION_SCHEMA
    resources = Resources(cpus=1)

    def __init__(self, config: SeedSearchConfig):
        self.config = config
        self.input_schema = embedding_schema(config.dim)
        self.batch_size = config.rows_per_call
        self.seeds: list[tuple[str, int, list[str], np.ndarray]] = []

    def setup(self) -> None:
        from curation.readers.embeddings import read_embeddings

        for dataset, n, paths in self.config.seeds:
            keys, vectors = read_embeddings(list(paths))
            if vectors.shape[1] != self.config.dim:
                raise ValueError(
                    f"seed dataset {dataset} is embedded in {vectors.shape[1]} dimensions, the "
                    f"pool in {self.config.dim}: embed both with the same model"
                )
            self.seeds.append((dataset, n, keys, vectors))

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch, pool = embedded_rows(batch, self.config.dim)
        if not batch.num_rows:
            return RETRIEVAL_SELECTION_SCHEMA.empty_table()
        pool_keys = batch.column("key").to_numpy(zero_copy_only=False)
        tables = []
        for dataset, n, seed_keys, seeds in self.seeds:
            q, r, sim = cross_pairs(
                seeds, pool, n, -2.0, index=self.config.index, nprobe=self.config.nprobe
            )
            tables.append(
                selection_rows(
                    pool_keys[r].tolist(),
                    dataset,
                    "sample",
                    seed_keys=[seed_keys[i] for i in q],
                    similarity=sim,
                )
            )
        return pa.concat_tables(tables)


def merge_sample_candidates(candidates: pa.Table, n_per_dataset: dict[str, int]) -> pa.Table:
    """Each seed image's ``n`` best candidates over all pool shards, ranked 1..n (similarity
    descending, then pool key), in (dataset, seed key, rank) order."""
    if not candidates.num_rows:
        return RETRIEVAL_SELECTION_SCHEMA.empty_table()
    ordered = candidates.sort_by(
        [("seed_dataset", "ascending"), ("seed_key", "ascending"), ("similarity", "descending")]
        + [("key", "ascending")]
    )
    datasets = ordered.column("seed_dataset").to_numpy(zero_copy_only=False)
    seed_keys = ordered.column("seed_key").to_numpy(zero_copy_only=False)
    starts = np.ones(len(datasets), dtype=bool)
    starts[1:] = (datasets[1:] != datasets[:-1]) | (seed_keys[1:] != seed_keys[:-1])
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))
    rank = np.arange(len(starts)) - group_start + 1
    limit = np.array([n_per_dataset[d] for d in datasets])
    keep = rank <= limit
    ranked = ordered.set_column(
        ordered.schema.get_field_index("rank"), "rank", pa.array(rank, pa.int32())
    )
    return ranked.filter(pa.array(keep))


# ------------------------------------------------------------------ cluster mode


def cluster_selection(
    dataset: str,
    seed_clusters: np.ndarray,
    pool_keys: list[str] | np.ndarray,
    pool_clusters: np.ndarray,
    m: int,
    min_seeds: int,
    seed: int,
) -> pa.Table:
    """``m`` pool images (a seeded random draw; all when fewer) from every cluster that holds at
    least ``min_seeds`` of the seed images (``seed_clusters``: each seed image's cluster)."""
    ids, counts = np.unique(seed_clusters, return_counts=True)
    chosen = ids[counts >= min_seeds]
    pool_keys = np.asarray(pool_keys, dtype=object)
    keys, ranks, clusters = [], [], []
    for cluster in chosen.tolist():
        members = np.flatnonzero(pool_clusters == cluster)
        rng = np.random.default_rng([seed, int(cluster)])
        members = members[rng.permutation(len(members))][:m]
        keys.extend(pool_keys[members].tolist())
        ranks.extend(range(1, len(members) + 1))
        clusters.extend([cluster] * len(members))
    return selection_rows(keys, dataset, "cluster", rank=ranks, cluster_id=clusters)


# ------------------------------------------------------------------ quotas and the union


def apply_quota(rows: pa.Table, quota: int | None) -> pa.Table:
    """At most ``quota`` distinct images, best rank first (then similarity, then key): every seed
    image keeps its nearest hit before any keeps a second."""
    if quota is None or rows.num_rows == 0:
        return rows
    ordered = rows.sort_by(
        [("rank", "ascending"), ("similarity", "descending"), ("key", "ascending")]
    )
    keys = ordered.column("key").to_pylist()
    seen: set[str] = set()
    keep = []
    for key in keys:
        if key not in seen and len(seen) >= quota:
            keep.append(False)
            continue
        seen.add(key)
        keep.append(True)
    return ordered.filter(pa.array(keep))


def first_provenance(selection: pa.Table, order: list[tuple[str, str]]) -> pa.Table:
    """One row per key: its first selection row in ``order`` (the config's (dataset, mode) order),
    then by rank, similarity (descending) and seed key."""
    if not selection.num_rows:
        return selection
    position = {pair: i for i, pair in enumerate(order)}
    pairs = zip(
        selection.column("seed_dataset").to_pylist(),
        selection.column("mode").to_pylist(),
        strict=True,
    )
    ranked = selection.append_column(
        "_order", pa.array([position.get(p, len(order)) for p in pairs], pa.int32())
    ).sort_by(
        [
            ("key", "ascending"),
            ("_order", "ascending"),
            ("rank", "ascending"),
            ("similarity", "descending"),
            ("seed_key", "ascending"),
        ]
    )
    keys = ranked.column("key").to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return ranked.filter(pa.array(first)).drop_columns(["_order"])
