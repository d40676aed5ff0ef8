"""Connected components and representatives of the Spark dedup job's edge DataFrame.

Components by the alternating large-star / small-star algorithm (Kiveris et al., "Connected
Components in MapReduce and Beyond", SoCC 2014), lineage cut every round. Then one
``applyInArrow`` per component picks representatives by
:func:`~curation.index.components.priority_rank` (largest pixel count, then smallest key) and, with
the chaining guard, :func:`~curation.index.components.greedy_star`: guarding each component on its
own gives the whole graph's groups. Component ids number the groups by their smallest key, which is
what :func:`~curation.index.components.components_table` gives for nodes in key order.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.engines.spark import to_spark_schema
from curation.engines.spark_frames import cut_lineage, functions, strings
from curation.index.components import (
    REASON_CONTAMINATED,
    REASON_DUPLICATE,
    choose_representatives,
    greedy_star,
    priority_rank,
)
from schemas import DEDUP_REASON_KEPT

logger = logging.getLogger(__name__)

MAX_STAR_ROUNDS = 100  # large-star / small-star needs O(log^2 n) rounds
GROUP_SCHEMA = pa.schema(
    [pa.field("key", pa.string(), nullable=False), pa.field("representative_key", pa.string())]
)


def _large_star(edges):
    """Each node links its larger neighbours to the smallest node of its closed neighbourhood."""
    F = functions()
    both = edges.unionByName(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    larger = both.join(smallest, "u").where(F.col("v") > F.col("u"))
    return larger.select(F.col("v").alias("u"), F.col("m").alias("v")).distinct()


def _small_star(edges):
    """Each node links itself and its smaller neighbours to the smallest of them."""
    F = functions()
    down = edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
    smallest = down.groupBy("u").agg(F.min("v").alias("m"))
    linked = down.join(smallest, "u").select(F.col("v").alias("u"), F.col("m").alias("v"))
    linked = linked.unionByName(smallest.select("u", F.col("m").alias("v")))
    return linked.where(F.col("u") != F.col("v")).distinct()


def _is_star_forest(edges) -> bool:
    """Every node links to one node only, and that node links nowhere (it is its root)."""
    F = functions()
    forked = edges.groupBy("u").count().where(F.col("count") > 1).select("u")
    chained = edges.join(edges.select(F.col("u").alias("v")).distinct(), "v", "left_semi")
    return forked.unionByName(chained.select("u")).limit(1).count() == 0


def connected_component_roots(edges):
    """``(key, root)`` for every key of an edge frame ``(src_key, dst_key)``: ``root`` is the
    smallest key of its connected component (large-star / small-star, Kiveris et al. 2014)."""
    F = functions()
    links = edges.select(F.col("src_key").alias("u"), F.col("dst_key").alias("v"))
    links = links.where(F.col("u") != F.col("v")).distinct()
    for round_ in range(1, MAX_STAR_ROUNDS + 1):
        links = cut_lineage(_small_star(_large_star(links)))
        if _is_star_forest(links):
            logger.info("connected components: converged after %d round(s)", round_)
            break
    else:
        raise RuntimeError(f"connected components did not converge in {MAX_STAR_ROUNDS} rounds")
    roots = links.select(F.col("v").alias("root")).distinct()
    return links.select(F.col("u").alias("key"), F.col("v").alias("root")).unionByName(
        roots.select(F.col("root").alias("key"), "root")
    )


def component_representatives(roots, edges, pixels, guard: bool):
    """``(key, representative_key)`` for every key in a connected component: the best-ranked
    member (:func:`priority_rank`), or with ``guard`` the chaining-guarded groups
    (:func:`greedy_star`), one ``applyInArrow`` per component."""
    F = functions()
    members = roots
    if pixels is not None:
        members = members.join(pixels, "key", "left")
    else:
        members = members.withColumn("pixel_count", F.lit(None).cast("long"))
    # Fresh column names on each side: both derive from ``roots``, which a cogroup cannot tell apart.
    members = members.select(F.col("root").alias("member_root"), "key", "pixel_count")
    inside = edges.join(roots.withColumnRenamed("key", "src_key"), "src_key").select(
        F.col("root").alias("edge_root"), "src_key", "dst_key"
    )

    def choose(members: pa.Table, component_edges: pa.Table) -> pa.Table:
        keys = strings(members.column("key"))
        rank = priority_rank(members.column("pixel_count"), keys)
        if guard:
            i = pc.index_in(strings(component_edges.column("src_key")), value_set=keys)
            j = pc.index_in(strings(component_edges.column("dst_key")), value_set=keys)
            rep = greedy_star(len(keys), i.to_numpy(), j.to_numpy(), rank)
        else:
            rep = choose_representatives(np.zeros(len(keys), dtype=np.int64), rank)
        return pa.table(
            {"key": keys, "representative_key": keys.take(pa.array(rep))}, schema=GROUP_SCHEMA
        )

    grouped = members.groupBy("member_root").cogroup(inside.groupBy("edge_root"))
    return grouped.applyInArrow(choose, to_spark_schema(GROUP_SCHEMA))


def _number_by_smallest_key(spark, groups):
    """``(group_min, component_id)``: ids 0, 1, ... in order of each group's smallest key
    (a distributed sort and ``zipWithIndex``, not one partition holding every group)."""
    ordered = groups.select("group_min").orderBy("group_min")
    numbered = ordered.rdd.zipWithIndex().map(lambda pair: (pair[0][0], pair[1]))
    return spark.createDataFrame(numbered, schema="group_min string, component_id long")


def components_frame(keys, representatives, contaminated_keys):
    """DEDUP_COMPONENT rows for every key of ``keys`` (a frame with a ``key`` column): a group
    holding a key of ``contaminated_keys`` is removed whole (``eval_contaminated``); in the others
    the representative is ``kept``, the rest ``duplicate``."""
    F = functions()
    spark = keys.sparkSession
    nodes = keys.select("key").join(representatives, "key", "left")
    nodes = cut_lineage(
        nodes.select("key", F.coalesce("representative_key", "key").alias("representative_key"))
    )
    groups = nodes.groupBy("representative_key").agg(F.min("key").alias("group_min"))
    ids = _number_by_smallest_key(spark, groups)
    bad = (
        contaminated_keys.join(nodes, "key")
        .select("representative_key")
        .distinct()
        .withColumn("contaminated", F.lit(True))
    )
    table = (
        nodes.join(groups, "representative_key")
        .join(ids, "group_min")
        .join(bad, "representative_key", "left")
    )
    is_rep = F.col("key") == F.col("representative_key")
    is_bad = F.coalesce(F.col("contaminated"), F.lit(False))
    reason = (
        F.when(is_bad, F.lit(REASON_CONTAMINATED))
        .when(is_rep, F.lit(DEDUP_REASON_KEPT))
        .otherwise(F.lit(REASON_DUPLICATE))
    )
    return table.select(
        "key",
        "component_id",
        "representative_key",
        (is_rep & ~is_bad).alias("keep"),
        reason.alias("reason"),
    )
