"""The partitioned pair search of the Spark dedup job: coarse centroids at the driver, each vector
in its ``replicas`` nearest partitions (``mapInArrow``), one exact search per partition
(``applyInArrow``), pairs found in several partitions kept once, and density scores from the
neighbours merged across each vector's partitions.

The per-partition work is :mod:`curation.index.partition`'s, so a Spark partition emits what the
in-process partitioned search emits for it. Density scores (:class:`~curation.index.knn.DensityScore`,
SSCD's normalisation): each partition emits its members' ``hi`` nearest neighbours and every
candidate pair whose score could pass (:func:`~curation.index.partition.density_pairs_within_partition`);
after the partitions' rows are merged, each image's density is the mean similarity of its pairs
ranked ``lo..hi`` over all its partitions (:func:`merged_densities`, computed in Spark SQL, the
rules of :func:`curation.index.knn.density_from_pairs`), and the pairs are scored with it
(:func:`density_scored_edges`). That equals the pool-wide
:func:`~curation.index.calibration.neighbour_density` of an image whose ``hi`` nearest neighbours
all share one of its partitions; a neighbour outside them can only lower the density.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.engines.spark import to_spark_schema
from curation.engines.spark_frames import (
    functions,
    limit_threads,
    matrix,
    pyspark_module,
    strings,
)
from curation.index.calibration import center_and_normalise
from curation.index.knn import DensityScore, cross_pairs
from curation.index.partition import (
    assign_nearest,
    density_pairs_within_partition,
    pairs_within_partition,
    train_coarse_centroids,
)

logger = logging.getLogger(__name__)

# Pairs found inside one partition: eval_set is null for pool x pool rows, else the set's name.
PAIR_SCHEMA = pa.schema(
    [
        pa.field("eval_set", pa.string()),
        pa.field("src_key", pa.string(), nullable=False),
        pa.field("dst_key", pa.string(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
    ]
)


def train_partition_centroids(
    frame, n_rows: int, n_centroids: int | None, sample_size: int, seed: int
) -> np.ndarray:
    """Coarse centroids (``n_centroids``, None: about sqrt(``n_rows``)) from a seeded sample of
    ``frame`` collected to the driver."""
    fraction = min(1.0, 1.2 * sample_size / max(n_rows, 1))
    sampled = frame.sample(withReplacement=False, fraction=fraction, seed=seed)
    sample = matrix(sampled.limit(sample_size).select("embedding").toArrow()["embedding"])
    if len(sample) == 0:  # a tiny frame can sample nothing
        sample = matrix(frame.limit(sample_size).select("embedding").toArrow()["embedding"])
    wanted = n_centroids or max(1, round(math.sqrt(n_rows)))
    used = min(wanted, len(sample))
    if used < wanted:
        logger.warning("%d centroids asked, %d sample rows: using %d", wanted, len(sample), used)
    logger.info("coarse k-means: %d centroids on %d sampled vectors", used, len(sample))
    return train_coarse_centroids(sample, used, seed=seed)


def assign_partitions(frame, centroids: np.ndarray, replicas: int):
    """``frame`` with a leading ``partition`` column, each row once per nearest centroid."""
    spark = frame.sparkSession
    T = pyspark_module().sql.types
    shared = spark.sparkContext.broadcast(np.ascontiguousarray(centroids, dtype=np.float32))
    r = min(replicas, len(centroids))

    def assign(batches):
        limit_threads()
        for batch in batches:
            if batch.num_rows == 0:
                continue
            cells = assign_nearest(matrix(batch.column("embedding")), shared.value, r)
            rows = batch.take(pa.array(np.repeat(np.arange(batch.num_rows), r)))
            yield pa.RecordBatch.from_arrays(
                [pa.array(cells.reshape(-1), pa.int64()), *rows.columns],
                names=["partition", *rows.schema.names],
            )

    schema = T.StructType([T.StructField("partition", T.LongType(), False), *frame.schema.fields])
    return frame.mapInArrow(assign, schema)


def partition_pairs(
    assigned,
    k: int,
    threshold: float,
    eval_threshold: float,
    density: DensityScore | None = None,
    *,
    center: tuple[float, ...] = (),
):
    """Rows found partition by partition (``eval_set``, ``src_key``, ``dst_key``,
    ``similarity``), not yet deduplicated: pool x pool rows (``eval_set`` null, ``src_key <
    dst_key``): pairs with cosine over ``threshold``, or with ``density`` the candidate pairs and
    each member's nearest neighbours; pool x evaluation pairs over ``eval_threshold`` (``src_key``
    the pool image). ``center``: subtracted from the pool vectors (then L2) for the pool pairs,
    SSCD's centering; pool x evaluation pairs stay on the raw cosine."""

    def search(table: pa.Table) -> pa.Table:
        limit_threads()
        is_eval = pc.is_valid(table.column("eval_set"))
        pool = table.filter(pc.invert(is_eval))
        pool_keys = strings(pool.column("key"))
        x = matrix(pool.column("embedding"))
        found = []
        if pool.num_rows > 1:
            searched = center_and_normalise(x, center) if center else x
            if density is None:
                edges = pairs_within_partition(pool_keys, searched, k, threshold)
            else:
                edges = density_pairs_within_partition(pool_keys, searched, k, threshold, density)
            nulls = pa.nulls(len(edges), pa.string())
            found.append(edges.add_column(0, PAIR_SCHEMA.field("eval_set"), nulls))
        evals = table.filter(is_eval)
        if pool.num_rows and evals.num_rows:
            for name in pc.unique(evals.column("eval_set")).to_pylist():
                refs = evals.filter(pc.equal(evals.column("eval_set"), name))
                qi, ri, sim = cross_pairs(
                    x, matrix(refs.column("embedding")), k, eval_threshold, index="flat",
                    use_gpu=False,
                )  # fmt: skip
                found.append(
                    pa.table(
                        {
                            "eval_set": pa.array([name] * len(qi), pa.string()),
                            "src_key": pool_keys.take(pa.array(qi)),
                            "dst_key": strings(refs.column("key")).take(pa.array(ri)),
                            "similarity": pa.array(sim, pa.float32()),
                        },
                        schema=PAIR_SCHEMA,
                    )
                )
        if not found:
            return PAIR_SCHEMA.empty_table()
        return pa.concat_tables([t.cast(PAIR_SCHEMA) for t in found])

    return assigned.groupBy("partition").applyInArrow(search, to_spark_schema(PAIR_SCHEMA))


def distinct_pairs(pairs, *columns):
    """One row per pair (every partition that found it computed the same similarity)."""
    F = functions()
    return pairs.groupBy(*columns).agg(F.max("similarity").alias("similarity"))


def merged_densities(rows, ranks: tuple[int, int]):
    """``(key, density float)`` for every key of the merged pool rows ``(src_key, dst_key,
    similarity)``: the mean of its rows' similarities ranked ``lo..hi`` (descending, 1-based; with
    ``count < hi`` rows, ranks ``min(lo, count)..count``), summed in double, as
    :func:`curation.index.knn.density_from_pairs`."""
    F = functions()
    lo, hi = ranks
    ends = rows.select(F.col("src_key").alias("key"), "similarity").unionByName(
        rows.select(F.col("dst_key").alias("key"), "similarity")
    )
    ranked = ends.groupBy("key").agg(
        F.sort_array(F.collect_list("similarity"), asc=False).alias("ranked")
    )
    count = F.least(F.size("ranked"), F.lit(hi))
    first = F.least(F.lit(lo), count)
    used = F.slice("ranked", first, count - first + 1)
    total = F.aggregate(used, F.lit(0.0).cast("double"), lambda acc, s: acc + s.cast("double"))
    return ranked.select("key", (total / F.size(used)).cast("float").alias("density"))


def density_scored_edges(rows, threshold: float, density: DensityScore):
    """``(edges, densities)``: the merged pool rows whose score ``similarity - beta * (density_src
    + density_dst) / 2`` (float32, as :func:`curation.index.calibration.calibrated_scores`) is over
    ``threshold``, with their cosine and that score; and :func:`merged_densities`."""
    F = functions()
    densities = merged_densities(rows, density.ranks)
    src = densities.select(F.col("key").alias("src_key"), F.col("density").alias("src_density"))
    dst = densities.select(F.col("key").alias("dst_key"), F.col("density").alias("dst_density"))
    mean = (F.col("src_density") + F.col("dst_density")) * F.lit(0.5).cast("float")
    score = F.col("similarity") - F.lit(density.beta).cast("float") * mean
    edges = (
        rows.join(src, "src_key")
        .join(dst, "dst_key")
        .where(score > F.lit(threshold).cast("float"))
        .select("src_key", "dst_key", "similarity", score.alias("score"))
    )
    return edges, densities
