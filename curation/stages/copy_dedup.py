"""Copy-detection dedup and decontamination over SSCD-style descriptors (LVD-142M, SPEC.md §1).

Self-dedup: each image's ``k`` nearest neighbours by cosine (faiss; exact below a size, IVF above),
edges with score > ``threshold``, groups, one representative kept per group. Groups are
chaining-guarded by default (:func:`curation.index.components.greedy_star`: an image joins a group
only through a direct edge, i.e. a score over the threshold, to its representative);
``guard=false`` gives plain connected components, as in the paper. The representative is the image
with the most pixels, then the smallest key.

**Edge scores** (issue 10 point 3b, issue 11 point 3). ``score=cosine``: the raw cosine, DINOv2's
0.6 by default. ``score=density``: the cosine less ``beta`` times the mean of the two images'
neighbour densities (:mod:`curation.index.calibration`, the pool as background, densities from the
same kNN search: :func:`curation.index.knn.knn_edges`). A descriptor checkpoint may carry a
calibration (score kind, ranks, beta, centre, a threshold chosen for a target precision on real
copies); the embed stage records it beside the embeddings and :func:`resolve_scoring` applies it.
Precedence, first that applies:

* score kind: ``dedup.score`` when not ``auto``; else the recorded calibration's; else cosine;
* threshold: ``dedup.threshold`` when set; else the recorded calibration's threshold when it is
  for the score kind in use; else 0.6 for cosine (SPEC.md); density without one is an error;
* ``dedup.use_calibration=false`` ignores the recorded calibration altogether (raw cosine, 0.6);
* the calibration's centre, when it has one, is subtracted from every pool vector (then L2) before
  the search, whatever the score kind; DEDUP_EDGE ``similarity`` is the cosine searched.

Pixel check (``verify``, :mod:`curation.jobs.dedup_verify`): pairs scoring within
``verify_margin`` under the threshold are copies when one image is a rescaled window of the other
(:mod:`curation.models.window_match`): the crops, pads and frames a descriptor scores just under.

Decontamination: pool images with a neighbour among an evaluation set's images at raw cosine >
``eval_threshold`` (0.45 in DINOv2) mark their whole group ``eval_contaminated``: it is removed.
It stays on the raw cosine of the uncentred descriptors: 0.45 is defined on that scale, an
evaluation set is no background for the pool's densities, and no calibrated threshold for pool x
evaluation pairs has been measured.

Two ways to find the pairs, same result for pairs that the ``k`` cut does not separate: one index
over the whole pool in one process (:func:`self_pairs`), or partitions around coarse centroids, each
vector in its ``replicas`` nearest so pairs near a boundary meet, searched one partition per task
(:class:`PartitionPairsStage`, any engine).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.config import ConfigError, check_choices
from curation.index.calibration import ScoreCalibration, center_and_normalise
from curation.index.components import (
    choose_representatives,
    component_stats,
    components_table,
    connected_components,
    greedy_star,
    labels_of,
    priority_rank,
)
from curation.index.knn import DensityScore, KnnEdges, cross_pairs, knn_edges, normalized
from curation.index.partition import density_pairs_within_partition, pairs_within_partition
from curation.stages.base import Resources
from schemas import DEDUP_EDGE_SCHEMA, STATUS_OK, embedding_schema

logger = logging.getLogger(__name__)

SPEC_THRESHOLD = 0.6  # DINOv2's cosine threshold for the pool (SPEC.md section 1)


@dataclass(frozen=True)
class CopyDedupConfig:
    k: int = 64  # nearest neighbours per image (SPEC: 64)
    # auto: the kind of the calibration recorded with the embeddings, else cosine
    score: Literal["auto", "cosine", "density"] = "auto"
    # score above which two images are copies; None: the recorded calibrated threshold, else the
    # SPEC's cosine 0.6 (resolve_scoring)
    threshold: float | None = None
    use_calibration: bool = True  # false: ignore a calibration recorded with the embeddings
    eval_threshold: float = 0.45  # raw cosine against evaluation sets (SPEC: 0.45)
    guard: bool = True  # chaining guard: members must match their representative directly
    # Pixel check (curation.jobs.dedup_verify): pairs scoring in (threshold - verify_margin,
    # threshold] are copies when one image is a rescaled window of the other, window_score >=
    # verify_min (curation.models.window_match). Off: the descriptor score alone decides.
    verify: bool = True
    verify_margin: float = 0.15
    verify_min: float = 0.9
    index: Literal["auto", "flat", "ivf", "ivfpq", "join"] = "auto"  # join: CPU, cosine only
    exact_limit: int = 50_000  # "auto": exact search up to this many images, IVF above
    nprobe: int = 16
    pq_bytes: int | None = None  # "ivfpq": bytes per code (candidates re-ranked exactly)
    partitions: int = 0  # >0: search in this many centroid partitions, one task each
    # Partitions each image joins (at most all). Pair recall at cosine 0.6 on spread 128-d data,
    # 32 cells: 0.88 with 2, 0.97 with 3, 0.99 with 4 (benchmarks/bench_dedup.py --recall-sweep).
    replicas: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        check_choices(self)
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        threshold = 0.0 if self.threshold is None else self.threshold
        if not (-1.0 <= self.eval_threshold <= 1.0 and -1.0 <= threshold <= 1.0):
            raise ValueError(
                "threshold (a cosine or a calibrated score) and eval_threshold (a cosine) must be "
                "in [-1, 1]"
            )
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if not (0.0 <= self.verify_margin <= 2.0 and -1.0 <= self.verify_min <= 1.0):
            raise ValueError(
                "verify_margin (a score difference) must be in [0, 2] and verify_min (a "
                f"correlation) in [-1, 1], got {self.verify_margin} and {self.verify_min}"
            )

    def index_options(self) -> dict:
        return {
            "index": self.index,
            "exact_limit": self.exact_limit,
            "nprobe": self.nprobe,
            "pq_bytes": self.pq_bytes,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class EdgeScoring:
    """The edge score a dedup run uses, after :func:`resolve_scoring`, and where each part came
    from (``config``, ``calibration`` or ``default``)."""

    kind: Literal["cosine", "density"] = "cosine"
    threshold: float = SPEC_THRESHOLD
    ranks: tuple[int, int] = (5, 20)  # density: neighbours ranked lo..hi (1-based, self excluded)
    beta: float = 1.0
    center: tuple[float, ...] = ()  # subtracted from every pool vector (then L2) before search
    kind_from: str = "default"
    threshold_from: str = "default"
    calibration_from: str | None = None  # where the recorded calibration was read, if used

    def lowered(self, margin: float) -> EdgeScoring:
        """The same score searched ``margin`` lower: the candidates of a pixel check."""
        return dataclasses.replace(self, threshold=self.threshold - margin)

    def density(self) -> DensityScore | None:
        return DensityScore(self.ranks, self.beta) if self.kind == "density" else None

    def describe(self) -> dict:
        """JSON-ready, for the stats (the centre as its width only)."""
        out = {
            "kind": self.kind,
            "threshold": self.threshold,
            "kind_from": self.kind_from,
            "threshold_from": self.threshold_from,
            "calibration_from": self.calibration_from,
            "centered": bool(self.center),
        }
        if self.kind == "density":
            out.update(ranks=list(self.ranks), beta=self.beta)
        return out


def resolve_scoring(
    config: CopyDedupConfig,
    recorded: ScoreCalibration | None = None,
    source: str | None = None,
) -> EdgeScoring:
    """The edge score and threshold of a run: ``config`` over the calibration ``recorded`` with the
    embeddings (read from ``source``) over the defaults (precedence in the module docstring)."""
    calibration = recorded if config.use_calibration else None
    if config.score != "auto":
        kind, kind_from = config.score, "config"
    elif calibration is not None:
        kind, kind_from = calibration.kind, "calibration"
    else:
        kind, kind_from = "cosine", "default"
    if config.threshold is not None:
        threshold, threshold_from = config.threshold, "config"
    elif calibration is not None and calibration.threshold is not None and calibration.kind == kind:
        threshold, threshold_from = calibration.threshold, "calibration"
    elif kind == "cosine":
        threshold, threshold_from = SPEC_THRESHOLD, "default"
    else:
        raise ConfigError(
            "dedup.score=density needs a threshold on that score: set dedup.threshold=..., or "
            "embed with a descriptor checkpoint whose calibration has one (write_calibration)"
        )
    if not math.isfinite(threshold):
        raise ConfigError(f"the {threshold_from} threshold {threshold!r} is not a number")
    base = calibration or ScoreCalibration()
    scoring = EdgeScoring(
        kind=kind,
        threshold=float(threshold),
        ranks=tuple(base.ranks),
        beta=float(base.beta),
        center=tuple(base.center),
        kind_from=kind_from,
        threshold_from=threshold_from,
        calibration_from=source if calibration is not None else None,
    )
    if kind == "density":
        scoring.density()  # checks ranks and beta now, not in a worker
    if recorded is not None and calibration is None:
        logger.info("dedup.use_calibration=false: ignoring the calibration in %s", source)
    logger.info(
        "copy dedup score: %s (from %s) > %g (from %s)%s",
        kind,
        kind_from,
        threshold,
        threshold_from,
        ", centred" if scoring.center else "",
    )
    return scoring


def search_vectors(vectors: np.ndarray, scoring: EdgeScoring) -> np.ndarray:
    """The pool vectors the pair search runs on: unit rows, centred first when the calibration
    has a centre (SSCD's centering then L2)."""
    if scoring.center:
        return normalized(center_and_normalise(vectors, scoring.center))
    return normalized(vectors)


def self_edges(vectors: np.ndarray, config: CopyDedupConfig, scoring: EdgeScoring) -> KnnEdges:
    """The pool's copy pairs under ``scoring``, one index over ``vectors`` (already searched-ready:
    :func:`search_vectors`), with each image's density for density scores."""
    return knn_edges(
        vectors,
        config.k,
        scoring.threshold,
        density=scoring.density(),
        **config.index_options(),
    )


def self_pairs(
    vectors: np.ndarray, config: CopyDedupConfig, scoring: EdgeScoring | None = None
) -> tuple[np.ndarray, ...]:
    """``(i, j, similarity)`` of the pool's copy pairs, one index over the whole pool
    (``scoring`` None: the config's alone, no recorded calibration)."""
    scoring = resolve_scoring(config) if scoring is None else scoring
    found = self_edges(search_vectors(vectors, scoring), config, scoring)
    return found.i, found.j, found.similarity


def contaminated_rows(
    pool: np.ndarray, eval_set: np.ndarray, config: CopyDedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pool row, eval row, similarity)`` of pool images near an evaluation image."""
    return cross_pairs(pool, eval_set, config.k, config.eval_threshold, **config.index_options())


def group_copies(
    keys: list[str],
    pixel_count: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    config: CopyDedupConfig,
    contaminated: np.ndarray | None = None,
) -> tuple[pa.Table, dict]:
    """DEDUP_COMPONENT rows of the pool from its copy pairs (already above the threshold), and the
    group statistics (size histogram, the largest groups' keys)."""
    n = len(keys)
    rank = priority_rank(pixel_count, keys)
    if config.guard:
        representative = greedy_star(n, i, j, rank)
    else:
        representative = choose_representatives(connected_components(n, i, j), rank)
    labels = labels_of(representative)
    table = components_table(keys, labels, representative, contaminated)
    return table, component_stats(labels, keys)


@dataclass(frozen=True)
class PartitionSearchConfig:
    dedup: CopyDedupConfig
    dim: int  # the embedding width
    max_rows: int  # the largest partition: searched as one batch
    scoring: EdgeScoring = EdgeScoring()  # resolved by the job (resolve_scoring)


class PartitionPairsStage:
    """One partition of the pool (EMBEDDING rows) -> its copy pairs (DEDUP_EDGE rows).

    The whole partition is one batch: exact search among its members. Pairs found in two
    partitions (an image sits in ``replicas`` of them) are merged by the job. For density scores
    the rows are each member's nearest neighbours and the candidate pairs
    (:func:`curation.index.partition.density_pairs_within_partition`): the job scores them once
    every partition's neighbours are in.
    """

    name = "copy_dedup_partition"
    output_schema = DEDUP_EDGE_SCHEMA
    resources = Resources(cpus=1)

    def __init__(self, config: PartitionSearchConfig):
        self.config = config.dedup
        self.scoring = config.scoring
        self.input_schema = embedding_schema(config.dim)
        self.batch_size = max(1, config.max_rows)

    def setup(self) -> None:
        pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        ok = batch.filter(pa.compute.equal(batch.column("status"), STATUS_OK))
        n = ok.num_rows
        if n < 2:
            return DEDUP_EDGE_SCHEMA.empty_table()
        flat = ok.column("embedding").combine_chunks().flatten().to_numpy()
        vectors = normalized(flat.reshape(n, -1))
        keys, k, threshold = ok.column("key"), self.config.k, self.scoring.threshold
        density = self.scoring.density()
        if density is None:
            return pairs_within_partition(keys, vectors, k, threshold)
        return density_pairs_within_partition(keys, vectors, k, threshold, density)
