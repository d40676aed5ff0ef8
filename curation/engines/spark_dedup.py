"""Copy-detection dedup and decontamination on Spark, with no process holding all the vectors.

The LVD-142M procedure (DINOv2, arXiv 2304.07193; SPEC.md section 1) run the partitioned way of
:mod:`curation.index.partition`:

1. EMBEDDING folders (or shard files) are read as a DataFrame ``(key, embedding)`` of their ``ok``
   rows.
2. A coarse spherical k-means is trained at the driver on a sample (``sample_size`` rows); its
   centroids are broadcast and every vector goes to its ``replicas`` nearest centroids
   (``mapInArrow``), so a pair that straddles a cell boundary still meets in a shared partition;
   evaluation vectors go to their ``eval_replicas`` nearest (more: the set is small, and pairs at
   the stricter threshold lie farther apart).
3. Each partition is searched exactly in one ``applyInArrow`` call (:mod:`.spark_pairs`): pool
   pairs among each vector's ``k`` nearest, and pool x evaluation pairs over ``eval_threshold``.
   A pair found in several partitions has the same similarity everywhere and is kept once. The
   edge score is the cosine, or with ``score: density`` SSCD's density-corrected score with each
   image's density merged across its partitions.
4. Connected components and representatives (:mod:`.spark_components`), chaining guard optional.
5. Every group holding a pool image matched to an evaluation image is removed whole
   (``eval_contaminated``); in the others the representative is ``kept``, the rest ``duplicate``.

Outputs (files are written by the Spark tasks with pyarrow, so executors must share the output
file system, as for :class:`~curation.engines.spark.SparkEngine`): ``edges/`` (DEDUP_EDGE),
``components/`` (DEDUP_COMPONENT), ``_config.yaml``, ``_stats.json`` and, last, ``_SUCCESS``; a
finished output folder is not redone. ``lvd dedup --engine spark`` runs the same computation
(:func:`spark_dedup_frames`) into a run's stage folders (:mod:`curation.jobs.dedup_spark`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml

from curation.config import ConfigError, check_choices, to_dict
from curation.engines.spark import to_spark_schema
from curation.engines.spark_components import (
    component_representatives,
    components_frame,
    connected_component_roots,
)
from curation.engines.spark_frames import (
    check_vectors,
    cut_lineage,
    functions,
    read_embedding_frame,
    read_pixel_counts,
    write_folder,
)
from curation.engines.spark_pairs import (
    PAIR_SCHEMA,
    assign_partitions,
    density_scored_edges,
    distinct_pairs,
    partition_pairs,
    train_partition_centroids,
)
from curation.engines.spark_stats import component_stats_of, eval_set_stats, reason_counts
from curation.engines.spark_verify import check_counts, checked_edges
from curation.imaging import DEFAULT_MAX_PIXELS
from curation.index.calibration import ScoreCalibration
from curation.index.components import REASON_CONTAMINATED, REASON_DUPLICATE
from curation.index.knn import DensityScore
from curation.io import read_json, write_bytes_atomic, write_json_atomic
from curation.readers.record_locations import NOT_CHECKED, locate_images, record_files
from curation.stages.copy_dedup import CopyDedupConfig, EdgeScoring, resolve_scoring
from schemas import DEDUP_COMPONENT_SCHEMA, DEDUP_EDGE_SCHEMA, DEDUP_REASON_KEPT, SchemaError

logger = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class SparkDedupConfig:
    k: int = 64  # nearest neighbours per image (within its partition)
    # Edge score and threshold, with the precedence of the in-process job
    # (:func:`curation.stages.copy_dedup.resolve_scoring`): "auto" takes the kind of the score
    # calibration recorded with the embeddings, else cosine; threshold None takes the recorded
    # calibrated threshold for that kind, else cosine 0.6. "density": cosine - beta * (density_a +
    # density_b) / 2, a density being the mean similarity of an image's neighbours ranked
    # ranks[0]..ranks[1] (SSCD); ranks and beta here apply when no calibration does.
    score: Literal["auto", "cosine", "density"] = "auto"
    threshold: float | None = None
    use_calibration: bool = True  # false: ignore a calibration recorded with the embeddings
    ranks: tuple[int, int] = (5, 20)
    beta: float = 1.0
    eval_threshold: float = 0.45  # pool x evaluation pairs: raw cosine > eval_threshold
    # Chaining guard: a member must be within the threshold of its group's representative.
    guard: bool = True
    n_centroids: int | None = None  # coarse cells; None: about sqrt(number of pool vectors)
    # Cells per vector (>= 2, so pairs across a cell boundary still meet). Pair recall against
    # exact search at cosine 0.6, 30k vectors, 32 / 173 cells (benchmarks/bench_dedup.py
    # --recall-sweep): planted 512-d copies (cosine 0.8-0.95) r=2 0.994 / 0.998, r=3 0.9993 / 1.0,
    # r=4 1.0 / 1.0; spread 128-d clusters (pairs across the threshold) r=2 0.884 / 0.953,
    # r=3 0.966 / 0.978, r=4 0.991 / 0.990. 3: most of r=4's recall for 3/4 of its search work.
    replicas: int = 3
    # Cells per evaluation vector (at least ``replicas``): evaluation sets are small next to the
    # pool, and the stricter threshold reaches pairs farther apart, which share fewer cells.
    eval_replicas: int = 8
    sample_size: int = 100_000  # rows collected to the driver to train the coarse k-means
    seed: int = 0
    # Pixel check of the pairs scoring in (threshold - verify_margin, threshold]
    # (:mod:`.spark_verify`, as CopyDedupConfig's); without image records nothing is checked.
    verify: bool = True
    verify_margin: float = 0.15
    verify_min: float = 0.9
    max_pixels: int = DEFAULT_MAX_PIXELS  # decode limit of the pixel check

    def __post_init__(self) -> None:
        check_choices(self)
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.threshold is not None and not -1.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold is a score in [-1, 1), got {self.threshold}")
        if not -1.0 <= self.eval_threshold < 1.0:
            raise ValueError(f"eval_threshold is a cosine in [-1, 1), got {self.eval_threshold}")
        DensityScore(tuple(self.ranks), self.beta)  # checks ranks and beta
        if self.replicas < 2:
            raise ValueError(
                f"replicas must be at least 2 (pairs straddling a cell boundary must meet in a "
                f"shared partition), got {self.replicas}"
            )
        if self.n_centroids is not None and self.n_centroids < 1:
            raise ValueError(
                f"n_centroids must be at least 1 (or null: auto), got {self.n_centroids}"
            )
        if self.sample_size < 1:
            raise ValueError(f"sample_size must be at least 1, got {self.sample_size}")
        CopyDedupConfig(verify_margin=self.verify_margin, verify_min=self.verify_min)  # checks


def resolve_score(
    config: SparkDedupConfig,
    calibration: ScoreCalibration | None = None,
    source: str | None = None,
) -> EdgeScoring:
    """The score, threshold (and centre) this dedup applies: ``config`` over the ``calibration``
    recorded with the embeddings (read from ``source``) over the defaults, by the in-process rule
    (:func:`curation.stages.copy_dedup.resolve_scoring`); the config's ranks and beta when no
    calibration applies."""
    shim = CopyDedupConfig(
        score=config.score, threshold=config.threshold, use_calibration=config.use_calibration
    )
    scoring = resolve_scoring(shim, calibration, source)
    if scoring.calibration_from is None:
        scoring = replace(scoring, ranks=tuple(config.ranks), beta=config.beta)
    return scoring


class DedupFrames(NamedTuple):
    """What :func:`spark_dedup_frames` computed (frames are lazy unless noted)."""

    pool: Any  # (key, embedding) of the pool's ok rows
    edges: Any  # DEDUP_EDGE rows (materialised)
    eval_pairs: Any  # (eval_set, src_key = pool key, dst_key = evaluation key, similarity)
    components: Any  # DEDUP_COMPONENT rows (materialised)
    densities: Any | None  # (key, density) with density scores
    checked: Any | None  # PAIR_CHECK rows of the pairs checked with pixels (verify; materialised)
    images: int
    dim: int | None
    centroids: int
    eval_sets: dict[str, int]  # name -> evaluation images
    scoring: EdgeScoring


def _eval_groups(evals: Sequence[Path] | Mapping[str, Sequence[Path]]) -> dict[str, list[Path]]:
    """Evaluation sets by name: a mapping as given, or folders named after themselves."""
    if isinstance(evals, Mapping):
        return {name: list(paths) for name, paths in evals.items()}
    groups: dict[str, list[Path]] = {}
    for folder in evals:
        name = Path(folder).name or str(folder)
        candidate, n = name, 1
        while candidate in groups:
            n += 1
            candidate = f"{name}-{n}"
        groups[candidate] = [Path(folder)]
    return groups


def spark_dedup_frames(
    spark,
    embeddings: Sequence[Path],
    config: SparkDedupConfig,
    *,
    records: Sequence[Path] = (),
    evals: Sequence[Path] | Mapping[str, Sequence[Path]] = (),
    calibration: ScoreCalibration | None = None,
    calibration_source: str | None = None,
) -> DedupFrames:
    """The dedup of ``embeddings`` (folders or shard files) against ``evals``, as DataFrames;
    ``calibration``: the score calibration recorded with the embeddings (:func:`resolve_score`)."""
    F = functions()
    scoring = resolve_score(config, calibration, calibration_source)
    pool = read_embedding_frame(spark, embeddings)
    n_pool, dim = check_vectors(pool, "embedding folders")
    pixels = read_pixel_counts(spark, records) if records else None
    eval_frames, eval_sizes = [], {}
    for name, paths in _eval_groups(evals).items():
        frame = read_embedding_frame(spark, paths, "evaluation folder")
        n_eval, eval_dim = check_vectors(frame, f"evaluation set {name}")
        if n_eval and n_pool and eval_dim != dim:
            raise SchemaError(f"evaluation set {name} is {eval_dim}-d but the pool is {dim}-d")
        eval_frames.append(frame.withColumn("eval_set", F.lit(name)))
        eval_sizes[name] = n_eval

    verify = config.verify and locate_images(record_files(records))
    if config.verify and not verify:
        logger.warning(NOT_CHECKED)
    search_threshold = (
        scoring.lowered(config.verify_margin).threshold if verify else scoring.threshold
    )
    if n_pool:
        centroids = train_partition_centroids(
            pool, n_pool, config.n_centroids, config.sample_size, config.seed
        )
        pool_rows = pool.withColumn("eval_set", F.lit(None).cast("string"))
        assigned = assign_partitions(pool_rows, centroids, config.replicas)
        for frame in eval_frames:
            replicas = max(config.eval_replicas, config.replicas)
            assigned = assigned.unionByName(assign_partitions(frame, centroids, replicas))
        pairs = partition_pairs(
            assigned,
            config.k,
            search_threshold,
            config.eval_threshold,
            scoring.density(),
            center=scoring.center,
        )
        pairs = cut_lineage(pairs)
    else:
        centroids = np.zeros((0, 0), np.float32)
        pairs = spark.createDataFrame([], to_spark_schema(PAIR_SCHEMA))
    rows = distinct_pairs(pairs.where(F.col("eval_set").isNull()), "src_key", "dst_key")
    densities = checked = None
    if scoring.kind == "density":
        rows, densities = density_scored_edges(
            cut_lineage(rows), search_threshold, scoring.density()
        )
    else:
        rows = rows.withColumn("score", F.col("similarity"))
    if verify:
        rows, checked = checked_edges(
            rows, records, scoring.threshold, config.verify_min, config.max_pixels
        )
    edges = cut_lineage(rows.select("src_key", "dst_key", "similarity"))
    eval_pairs = distinct_pairs(
        pairs.where(F.col("eval_set").isNotNull()), "eval_set", "src_key", "dst_key"
    )
    roots = connected_component_roots(edges)
    representatives = component_representatives(roots, edges, pixels, config.guard)
    contaminated = eval_pairs.select(F.col("src_key").alias("key")).distinct()
    components = cut_lineage(components_frame(pool, representatives, contaminated))
    return DedupFrames(
        pool, edges, eval_pairs, components, densities, checked, n_pool, dim, len(centroids),
        eval_sizes, scoring,
    )  # fmt: skip


def _run_description(config, embeddings, records, evals, calibration) -> dict:
    groups = _eval_groups(evals)
    return {
        "config": to_dict(config),
        "embeddings": [str(Path(p).absolute()) for p in embeddings],
        "records": [str(Path(p).absolute()) for p in records],
        "evals": {name: [str(Path(p).absolute()) for p in paths] for name, paths in groups.items()},
        "calibration": calibration.to_dict() if calibration is not None else None,
    }


def run_spark_dedup(
    spark,
    embeddings: Sequence[Path],
    out: Path,
    config: SparkDedupConfig = SparkDedupConfig(),
    *,
    records: Sequence[Path] = (),
    evals: Sequence[Path] | Mapping[str, Sequence[Path]] = (),
    calibration: ScoreCalibration | None = None,
    calibration_source: str | None = None,
) -> dict:
    """Dedup the ``embeddings`` folders (and decontaminate them against ``evals``) into ``out``;
    returns the stats written to ``out/_stats.json``. ``calibration``: the score calibration
    recorded with the embeddings' descriptor, read from ``calibration_source`` (see
    :func:`resolve_score`). A finished ``out``
    (``_SUCCESS``) made with the same inputs and config is returned as is; made with others, it is
    an error."""
    out = Path(out)
    description = _run_description(config, embeddings, records, evals, calibration)
    if (out / SUCCESS).exists():
        before = yaml.safe_load((out / "_config.yaml").read_text())
        if before != description:
            raise ConfigError(
                f"{out} holds a finished dedup of other inputs or settings; give another --out "
                "or delete that folder"
            )
        logger.info("%s is complete; nothing to do", out)
        return read_json(out / "_stats.json")
    for stale in ("edges", "components", "_stats.json", "_config.yaml"):
        path = out / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    started = time.monotonic()
    found = spark_dedup_frames(
        spark,
        embeddings,
        config,
        records=records,
        evals=evals,
        calibration=calibration,
        calibration_source=calibration_source,
    )
    n_edges = write_folder(
        found.edges.select("src_key", "dst_key", "similarity").orderBy("src_key", "dst_key"),
        out / "edges",
        DEDUP_EDGE_SCHEMA,
    )
    write_folder(found.components.orderBy("key"), out / "components", DEDUP_COMPONENT_SCHEMA)
    reasons = reason_counts(found.components)
    stats = {
        "images": found.images,
        "dim": found.dim,
        "centroids": found.centroids,
        "pairs": n_edges,
        "scoring": found.scoring.describe(),
        "kept": reasons.get(DEDUP_REASON_KEPT, 0),
        "removed": {
            REASON_DUPLICATE: reasons.get(REASON_DUPLICATE, 0),
            REASON_CONTAMINATED: reasons.get(REASON_CONTAMINATED, 0),
        },
        "groups": component_stats_of(found.components),
        "eval_sets": eval_set_stats(found.eval_pairs, list(found.eval_sets)),
        "guard": config.guard,
        **(check_counts(found.checked, config.verify_min) if found.checked is not None else {}),
        "seconds": round(time.monotonic() - started, 3),
    }
    write_bytes_atomic(out / "_config.yaml", yaml.safe_dump(description, sort_keys=False).encode())
    write_json_atomic(out / "_stats.json", stats)
    write_bytes_atomic(out / SUCCESS, b"")
    logger.info(
        "spark dedup: %d images, %d kept, %s removed", found.images, stats["kept"], stats["removed"]
    )
    return stats
