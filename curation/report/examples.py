"""The examples a curator looks at: copy-dedup components, decontamination hits, and what each
seed image retrieved.

Each function returns None when the stage it reads did not run, and plain dataclasses otherwise;
pictures are attached later by key (:mod:`curation.report.thumbnails`), so these stay cheap to test
on tables without images.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.report.funnel import count_rows
from curation.rundir import RunDir

MAX_COMPONENTS_SHOWN = 6  # with pictures
MAX_COMPONENTS_LISTED = 20  # in the table of the largest components
MAX_MEMBERS_SHOWN = 8
MAX_SEEDS_SHOWN = 6
MAX_NEIGHBOURS_SHOWN = 8


@dataclass
class Member:
    key: str
    reason: str  # kept | duplicate | eval_contaminated
    similarity: float | None  # to the representative (or the best edge within the component)


@dataclass
class Component:
    component_id: int
    representative: str
    size: int
    members: list[Member]
    edges: list[tuple[str, str, float]] = field(default_factory=list)


@dataclass
class CopyDedup:
    components: list[Component]  # the largest, with members and edges (size > 1 only)
    singletons: int
    pairs: int
    scoring: dict


@dataclass
class EvalHits:
    name: str
    eval_images: int | None
    pool_images_matched: int | None
    examples: list[dict]  # {"pool", "eval", "sim"}
    eval_folder: str  # the ENCODED_IMAGE folder that holds the eval images


@dataclass
class SeedExample:
    seed_dataset: str
    seed_key: str
    neighbours: list[tuple[str, int | None, float | None]]  # (pool key, rank, similarity)


def _outputs(run: RunDir, folder: str) -> list:
    stage = run.stage(folder)
    return stage.outputs() or storage.list_files(stage.path, "*.parquet")


def _edges(run: RunDir, keys: set[str]) -> list[tuple[str, str, float]]:
    paths = _outputs(run, "dedup_edges")
    if not paths or not keys:
        return []
    table = storage.read_table(paths)
    table = table.filter(
        pc.is_in(table.column("src_key"), value_set=pa.array(sorted(keys), pa.string()))
    )
    return [
        (s, d, float(v))
        for s, d, v in zip(
            table.column("src_key").to_pylist(),
            table.column("dst_key").to_pylist(),
            table.column("similarity").to_pylist(),
        )
        if d in keys
    ]


def _largest_components(table: pa.Table) -> tuple[pa.Table, int]:
    """The rows of the :data:`MAX_COMPONENTS_LISTED` largest components of more than one image,
    and how many components hold one image (counted in Arrow: a pool of millions stays cheap)."""
    sizes = table.group_by("component_id").aggregate([("key", "count")])
    multi = sizes.filter(pc.greater(sizes.column("key_count"), 1))
    top = multi.sort_by([("key_count", "descending"), ("component_id", "ascending")])
    top_ids = top.column("component_id").slice(0, MAX_COMPONENTS_LISTED)
    rows = table.filter(pc.is_in(table.column("component_id"), value_set=top_ids))
    return rows, sizes.num_rows - multi.num_rows


def _members(rows: list[dict], representative: str, edges: list) -> list[Member]:
    """The representative first, then by key; each other member with its similarity to the
    representative, or to its most similar member when no edge joins them directly."""
    best: dict[str, float] = {}
    to_rep: dict[str, float] = {}
    for src, dst, sim in edges:
        for a, b in ((src, dst), (dst, src)):
            best[a] = max(best.get(a, sim), sim)
            if b == representative:
                to_rep[a] = sim
    return [
        Member(
            row["key"],
            row["reason"],
            None if row["key"] == representative else to_rep.get(row["key"], best.get(row["key"])),
        )
        for row in sorted(rows, key=lambda r: (r["key"] != representative, r["key"]))
    ]


def copy_dedup(run_root: str) -> CopyDedup | None:
    """The largest copy-dedup components (DEDUP_COMPONENT rows grouped by ``component_id``), each
    member's similarity to its representative, and the edges inside each shown component."""
    run = RunDir(run_root)
    paths = _outputs(run, "dedup_copy")
    if not paths:
        return None
    columns = ["key", "component_id", "representative_key", "reason"]
    rows, singletons = _largest_components(storage.read_table(paths, columns=columns))
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in rows.to_pylist():
        groups[row["component_id"]].append(row)
    order = sorted(groups, key=lambda cid: (-len(groups[cid]), cid))
    shown = order[:MAX_COMPONENTS_SHOWN]
    edges = _edges(run, {row["key"] for cid in shown for row in groups[cid]})
    components = []
    for cid in order:
        representative = groups[cid][0]["representative_key"]
        keys = {row["key"] for row in groups[cid]}
        inside = [e for e in edges if e[0] in keys] if cid in shown else []
        members = _members(groups[cid], representative, inside)
        components.append(Component(cid, representative, len(keys), members, inside))
    stats = run.stage("dedup_copy").read_stats()
    pairs = stats.get("pairs")
    if pairs is None:
        pairs = count_rows(_outputs(run, "dedup_edges"))
    return CopyDedup(components, singletons, int(pairs), stats.get("scoring") or {})


def decontamination(run_root: str) -> list[EvalHits] | None:
    """Per evaluation set (``eval_<name>`` in ``dedup_copy/_stats.json``): the pool images found
    near its images, with examples; None when copy dedup did not run, [] when it ran without
    evaluation sets."""
    stage = RunDir(run_root).stage("dedup_copy")
    stats = stage.read_stats()
    if not stats and not stage.is_complete():
        return None
    hits = []
    for name, entry in sorted(stats.items()):
        if not name.startswith("eval_") or not isinstance(entry, dict):
            continue
        eval_name = name[len("eval_") :]
        hits.append(
            EvalHits(
                name=eval_name,
                eval_images=entry.get("eval_images"),
                pool_images_matched=entry.get("pool_images_matched"),
                examples=list(entry.get("examples") or []),
                eval_folder=f"embed_eval_{eval_name}_inputs",
            )
        )
    return hits


def retrieval_examples(run_root: str) -> dict[str, list[SeedExample]] | None:
    """Per seed dataset, a few seed images of ``sample`` retrieval with their neighbours in rank
    order; None when retrieval did not run."""
    run = RunDir(run_root)
    paths = _outputs(run, "retrieval")
    if not paths:
        return None
    columns = ["key", "seed_dataset", "mode", "seed_key", "rank", "similarity"]
    table = storage.read_table(paths, columns=columns)
    sample = table.filter(
        pc.and_(pc.equal(table.column("mode"), "sample"), pc.is_valid(table.column("seed_key")))
    )
    result: dict[str, list[SeedExample]] = {}
    for dataset in sorted(pc.unique(sample.column("seed_dataset")).to_pylist()):
        mine = sample.filter(pc.equal(sample.column("seed_dataset"), dataset))
        seed_keys = pc.unique(mine.column("seed_key"))
        first = pc.take(seed_keys, pc.array_sort_indices(seed_keys)).slice(0, MAX_SEEDS_SHOWN)
        by_seed: dict[str, list] = defaultdict(list)
        for row in mine.filter(pc.is_in(mine.column("seed_key"), value_set=first)).to_pylist():
            by_seed[row["seed_key"]].append((row["key"], row["rank"], row["similarity"]))
        result[dataset] = [
            SeedExample(
                dataset, seed_key, sorted(by_seed[seed_key], key=_by_rank)[:MAX_NEIGHBOURS_SHOWN]
            )
            for seed_key in first.to_pylist()
        ]
    return result


def _by_rank(neighbour: tuple) -> tuple:
    key, rank, _ = neighbour
    return (rank if rank is not None else 1 << 30, key)
