"""Figures of the Spark dedup job, computed from its DataFrames (only small results reach the
driver): group sizes and the largest groups, reasons, pairs per evaluation set."""

from __future__ import annotations

from curation.engines.spark_frames import functions, pyspark_module

TOP_COMPONENTS = 10
EXAMPLE_PAIRS = 5


def component_stats_of(components) -> dict:
    """Like :func:`curation.index.components.component_stats`, from the components frame."""
    F = functions()
    sizes = components.groupBy("component_id").agg(F.count("*").alias("size"))
    histogram = {
        int(r["size"]): int(r["n"])
        for r in sizes.groupBy("size").agg(F.count("*").alias("n")).orderBy("size").collect()
    }
    top = (
        sizes.where(F.col("size") > 1)
        .orderBy(F.col("size").desc(), "component_id")
        .limit(TOP_COMPONENTS)
        .collect()
    )
    members = {}
    if top:
        ids = [r["component_id"] for r in top]
        rows = (
            components.where(F.col("component_id").isin(ids))
            .groupBy("component_id")
            .agg(F.sort_array(F.collect_list("key")).alias("keys"))
            .collect()
        )
        members = {r["component_id"]: list(r["keys"]) for r in rows}
    return {
        "images": int(sum(s * c for s, c in histogram.items())),
        "components": int(sum(histogram.values())),
        "images_in_groups": int(sum(s * c for s, c in histogram.items() if s > 1)),
        "size_histogram": {str(s): c for s, c in histogram.items()},
        "largest": [members[r["component_id"]] for r in top],
    }


def eval_set_stats(eval_pairs, names) -> dict:
    """Per evaluation set: pairs, pool images matched, the closest pairs as examples."""
    F = functions()
    Window = pyspark_module().sql.Window
    per_set = {name: {"pairs": 0, "pool_images_matched": 0, "examples": []} for name in names}
    if not per_set:
        return per_set
    counts = eval_pairs.groupBy("eval_set").agg(
        F.count("*").alias("pairs"), F.count_distinct("src_key").alias("pool_images_matched")
    )
    for row in counts.collect():
        per_set[row["eval_set"]].update(
            pairs=row["pairs"], pool_images_matched=row["pool_images_matched"]
        )
    best = Window.partitionBy("eval_set").orderBy(F.col("similarity").desc(), "src_key", "dst_key")
    examples = eval_pairs.withColumn("n", F.row_number().over(best)).where(
        F.col("n") <= EXAMPLE_PAIRS
    )
    for row in examples.orderBy("eval_set", "n").collect():
        per_set[row["eval_set"]]["examples"].append(
            {
                "pool_key": row["src_key"],
                "eval_key": row["dst_key"],
                "similarity": row["similarity"],
            }
        )
    return per_set


def reason_counts(components) -> dict[str, int]:
    return {r["reason"]: int(r["count"]) for r in components.groupBy("reason").count().collect()}
