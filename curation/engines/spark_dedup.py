"""Copy-detection dedup and decontamination on Spark, with no process holding all the vectors.

The LVD-142M procedure (DINOv2, arXiv 2304.07193; SPEC.md section 1) run the partitioned way of
:mod:`curation.index.partition`:

1. EMBEDDING folders are read as a DataFrame ``(key, embedding)`` of their ``ok`` rows.
2. A coarse spherical k-means is trained at the driver on a sample (``sample_size`` rows); its
   centroids are broadcast and every vector goes to its ``replicas`` nearest centroids
   (``mapInArrow``), so a pair that straddles a cell boundary still meets in a shared partition;
   evaluation vectors go to their ``eval_replicas`` nearest (more: the set is small, and pairs at
   the stricter threshold lie farther apart).
3. Each partition is searched exactly in one ``applyInArrow`` call: pool pairs with cosine over
   ``threshold`` among each vector's ``k`` nearest, and pool x evaluation pairs over
   ``eval_threshold``. A pair found in several partitions has the same similarity everywhere and is
   kept once.
4. Connected components of the edge DataFrame by the alternating large-star / small-star algorithm
   (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014), lineage cut by a
   checkpoint every round (reliable when ``spark.checkpoint.dir`` is set, local otherwise).
5. One ``applyInArrow`` per connected component picks representatives by
   :func:`~curation.index.components.priority_rank` (largest pixel count, then smallest key) and,
   with ``guard``, applies the chaining guard :func:`~curation.index.components.greedy_star`;
   guarding each component on its own gives the whole graph's groups.
6. Every group holding a pool image matched to an evaluation image is removed whole
   (``eval_contaminated``); in the others the representative is ``kept``, the rest ``duplicate``.

Component ids number the groups by their smallest key, which is what
:func:`~curation.index.components.components_table` gives for nodes in key order. Outputs (files are
written by the Spark tasks with pyarrow, so executors must share the output file system, as for
:class:`~curation.engines.spark.SparkEngine`): ``edges/`` (DEDUP_EDGE), ``components/``
(DEDUP_COMPONENT), ``_config.yaml``, ``_stats.json`` and, last, ``_SUCCESS``; a finished output
folder is not redone.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curation.config import ConfigError, to_dict
from curation.engines.base import EngineUnavailable
from curation.engines.spark import _import_pyspark, to_spark_schema
from curation.index.components import (
    REASON_CONTAMINATED,
    REASON_DUPLICATE,
    choose_representatives,
    greedy_star,
    priority_rank,
)
from curation.index.knn import cross_pairs
from curation.index.partition import (
    assign_nearest,
    pairs_within_partition,
    train_coarse_centroids,
)
from curation.io import AtomicParquetWriter, read_json, write_bytes_atomic, write_json_atomic
from schemas import (
    DEDUP_COMPONENT_SCHEMA,
    DEDUP_EDGE_SCHEMA,
    DEDUP_REASON_KEPT,
    STATUS_OK,
    SchemaError,
)

logger = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
MAX_STAR_ROUNDS = 100  # large-star / small-star needs O(log^2 n) rounds
TOP_COMPONENTS = 10
EXAMPLE_PAIRS = 5
# Pairs found inside one partition: eval_set is null for pool x pool edges, else the set's name.
_PAIR_SCHEMA = pa.schema(
    [
        pa.field("eval_set", pa.string()),
        pa.field("src_key", pa.string(), nullable=False),
        pa.field("dst_key", pa.string(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
    ]
)
_GROUP_SCHEMA = pa.schema(
    [pa.field("key", pa.string(), nullable=False), pa.field("representative_key", pa.string())]
)


@dataclass(frozen=True)
class SparkDedupConfig:
    k: int = 64  # nearest neighbours per image (within its partition)
    threshold: float = 0.6  # pool edges: cosine > threshold
    eval_threshold: float = 0.45  # pool x evaluation pairs: cosine > eval_threshold
    # Chaining guard: a member must be within the threshold of its group's representative.
    guard: bool = True
    n_centroids: int | None = None  # coarse cells; None: about sqrt(number of pool vectors)
    replicas: int = 2  # cells per vector (>= 2, so pairs across a cell boundary still meet)
    # Cells per evaluation vector (at least ``replicas``): evaluation sets are small next to the
    # pool, and the stricter threshold reaches pairs farther apart, which share fewer cells.
    eval_replicas: int = 8
    sample_size: int = 100_000  # rows collected to the driver to train the coarse k-means
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        for name in ("threshold", "eval_threshold"):
            if not -1.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} is a cosine in [-1, 1), got {getattr(self, name)}")
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


def _pyspark():
    pyspark = _import_pyspark()
    if not hasattr(pyspark.sql.GroupedData, "applyInArrow"):
        raise EngineUnavailable(
            f"the Spark dedup needs PySpark >= 4.0 (applyInArrow); this is {pyspark.__version__}: "
            "pip install -U 'pyspark>=4.0'"
        )
    return pyspark


def _functions():
    return _pyspark().sql.functions


# ---------------------------------------------------------------------------------------- inputs


def _parquet_folder(folder: Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file; give the folder that holds it")
    if not any(p.name[0] not in "._" for p in folder.glob("*.parquet")):
        raise FileNotFoundError(f"{what} {folder} holds no .parquet files")
    return folder


def read_embedding_frame(spark, folders: Sequence[Path], what: str = "embedding folder"):
    """DataFrame ``(key string, embedding array<float>)`` of the ``ok`` rows of EMBEDDING folders
    (all rows when a folder has no ``status`` column, as EMBEDDING v1)."""
    F, T = _functions(), _pyspark().sql.types
    frames = []
    for folder in folders:
        frame = spark.read.parquet(str(_parquet_folder(folder, what)))
        fields = {f.name: f.dataType for f in frame.schema.fields}
        embedding = fields.get("embedding")
        if not (
            isinstance(fields.get("key"), T.StringType)
            and isinstance(embedding, T.ArrayType)
            and isinstance(embedding.elementType, T.FloatType)
        ):
            raise SchemaError(
                f"{what} {folder} does not hold EMBEDDING shards: it needs columns key (string) "
                f"and embedding (float32 list), found {frame.schema.simpleString()}"
            )
        if "status" in fields:
            frame = frame.where(F.col("status") == STATUS_OK)
        frames.append(frame.where(F.col("embedding").isNotNull()).select("key", "embedding"))
    if not frames:
        raise FileNotFoundError(f"no {what} given")
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


def read_pixel_counts(spark, folders: Sequence[Path]):
    """DataFrame ``(key, pixel_count)`` from IMAGE_RECORD folders (width x height of ``ok`` rows)."""
    F = _functions()
    frames = []
    for folder in folders:
        frame = spark.read.parquet(str(_parquet_folder(folder, "image record folder")))
        missing = {"key", "width", "height"} - set(frame.columns)
        if missing:
            raise SchemaError(
                f"image record folder {folder} does not hold IMAGE_RECORD shards: missing "
                f"column(s) {sorted(missing)}"
            )
        if "status" in frame.columns:
            frame = frame.where(F.col("status") == STATUS_OK)
        pixels = F.col("width").cast("long") * F.col("height").cast("long")
        frames.append(frame.select("key", pixels.alias("pixel_count")))
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union.groupBy("key").agg(F.max("pixel_count").alias("pixel_count"))


def _check_vectors(frame, what: str) -> tuple[int, int | None]:
    """Rows and width of an embedding frame; an error on mixed widths or repeated keys."""
    F = _functions()
    row = frame.agg(
        F.count("*").alias("rows"),
        F.count_distinct("key").alias("keys"),
        F.min(F.size("embedding")).alias("low"),
        F.max(F.size("embedding")).alias("high"),
    ).first()
    if row["rows"] and row["low"] != row["high"]:
        raise SchemaError(f"{what}: embeddings of different widths {row['low']}..{row['high']}")
    if row["keys"] != row["rows"]:
        raise SchemaError(
            f"{what}: {row['rows'] - row['keys']} repeated key(s); keys must be unique"
        )
    return row["rows"], row["low"]


# -------------------------------------------------------------------------------- partitioned search


def _matrix(column) -> np.ndarray:
    """``(rows, d)`` float32 from an Arrow list column of equal-length float lists."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)


def _strings(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column.cast(pa.string())


def _limit_threads() -> None:
    """faiss inside a Spark task uses the task's cores, not the machine's."""
    import faiss

    context = _pyspark().TaskContext.get()
    if context is not None:
        faiss.omp_set_num_threads(max(1, int(context.cpus())))


def train_partition_centroids(frame, n_rows: int, config: SparkDedupConfig) -> np.ndarray:
    """Coarse centroids from a seeded sample of ``frame`` collected to the driver."""
    fraction = min(1.0, 1.2 * config.sample_size / max(n_rows, 1))
    sampled = frame.sample(withReplacement=False, fraction=fraction, seed=config.seed)
    sample = _matrix(sampled.limit(config.sample_size).select("embedding").toArrow()["embedding"])
    if len(sample) == 0:  # a tiny frame can sample nothing
        sample = _matrix(frame.limit(config.sample_size).select("embedding").toArrow()["embedding"])
    wanted = config.n_centroids or max(1, round(math.sqrt(n_rows)))
    n_centroids = min(wanted, len(sample))
    if n_centroids < wanted:
        logger.warning(
            "%d centroids asked, %d sample rows: using %d", wanted, len(sample), n_centroids
        )
    logger.info("coarse k-means: %d centroids on %d sampled vectors", n_centroids, len(sample))
    return train_coarse_centroids(sample, n_centroids, seed=config.seed)


def assign_partitions(frame, centroids: np.ndarray, replicas: int):
    """``frame`` with a leading ``partition`` column, each row once per nearest centroid."""
    spark = frame.sparkSession
    T = _pyspark().sql.types
    shared = spark.sparkContext.broadcast(np.ascontiguousarray(centroids, dtype=np.float32))
    r = min(replicas, len(centroids))

    def assign(batches):
        _limit_threads()
        for batch in batches:
            if batch.num_rows == 0:
                continue
            cells = assign_nearest(_matrix(batch.column("embedding")), shared.value, r)
            rows = batch.take(pa.array(np.repeat(np.arange(batch.num_rows), r)))
            yield pa.RecordBatch.from_arrays(
                [pa.array(cells.reshape(-1), pa.int64()), *rows.columns],
                names=["partition", *rows.schema.names],
            )

    schema = T.StructType([T.StructField("partition", T.LongType(), False), *frame.schema.fields])
    return frame.mapInArrow(assign, schema)


def partition_pairs(assigned, config: SparkDedupConfig):
    """Pairs found partition by partition (``eval_set``, ``src_key``, ``dst_key``, ``similarity``):
    pool x pool edges over ``threshold`` (``eval_set`` null, ``src_key < dst_key``) and pool x
    evaluation pairs over ``eval_threshold`` (``src_key`` the pool image). Not yet deduplicated."""
    k, threshold, eval_threshold = config.k, config.threshold, config.eval_threshold

    def search(table: pa.Table) -> pa.Table:
        _limit_threads()
        is_eval = pc.is_valid(table.column("eval_set"))
        pool = table.filter(pc.invert(is_eval))
        pool_keys = _strings(pool.column("key"))
        x = _matrix(pool.column("embedding"))
        found = []
        if pool.num_rows > 1:
            edges = pairs_within_partition(pool_keys, x, k, threshold)
            found.append(
                edges.add_column(
                    0, _PAIR_SCHEMA.field("eval_set"), pa.nulls(len(edges), pa.string())
                )
            )
        evals = table.filter(is_eval)
        if pool.num_rows and evals.num_rows:
            for name in pc.unique(evals.column("eval_set")).to_pylist():
                refs = evals.filter(pc.equal(evals.column("eval_set"), name))
                qi, ri, sim = cross_pairs(
                    x,
                    _matrix(refs.column("embedding")),
                    k,
                    eval_threshold,
                    index="flat",
                    use_gpu=False,
                )
                found.append(
                    pa.table(
                        {
                            "eval_set": pa.array([name] * len(qi), pa.string()),
                            "src_key": pool_keys.take(pa.array(qi)),
                            "dst_key": _strings(refs.column("key")).take(pa.array(ri)),
                            "similarity": pa.array(sim, pa.float32()),
                        },
                        schema=_PAIR_SCHEMA,
                    )
                )
        if not found:
            return _PAIR_SCHEMA.empty_table()
        return pa.concat_tables([t.cast(_PAIR_SCHEMA) for t in found])

    return assigned.groupBy("partition").applyInArrow(search, to_spark_schema(_PAIR_SCHEMA))


def _distinct_pairs(pairs, *columns):
    """One row per pair (every partition that found it computed the same similarity)."""
    F = _functions()
    return pairs.groupBy(*columns).agg(F.max("similarity").alias("similarity"))


# ---------------------------------------------------------------------------- connected components


def _cut_lineage(frame):
    """Materialise ``frame`` and forget how it was computed (iterative plans grow otherwise)."""
    if frame.sparkSession.sparkContext.getCheckpointDir():
        return frame.checkpoint(eager=True)
    return frame.localCheckpoint(eager=True)


def _large_star(edges):
    """Each node links its larger neighbours to the smallest node of its closed neighbourhood."""
    F = _functions()
    both = edges.unionByName(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    larger = both.join(smallest, "u").where(F.col("v") > F.col("u"))
    return larger.select(F.col("v").alias("u"), F.col("m").alias("v")).distinct()


def _small_star(edges):
    """Each node links itself and its smaller neighbours to the smallest of them."""
    F = _functions()
    down = edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
    smallest = down.groupBy("u").agg(F.min("v").alias("m"))
    linked = down.join(smallest, "u").select(F.col("v").alias("u"), F.col("m").alias("v"))
    linked = linked.unionByName(smallest.select("u", F.col("m").alias("v")))
    return linked.where(F.col("u") != F.col("v")).distinct()


def _is_star_forest(edges) -> bool:
    """Every node links to one node only, and that node links nowhere (it is its root)."""
    F = _functions()
    forked = edges.groupBy("u").count().where(F.col("count") > 1).select("u")
    chained = edges.join(edges.select(F.col("u").alias("v")).distinct(), "v", "left_semi")
    return forked.unionByName(chained.select("u")).limit(1).count() == 0


def connected_component_roots(edges):
    """``(key, root)`` for every key of an edge frame ``(src_key, dst_key)``: ``root`` is the
    smallest key of its connected component (large-star / small-star, Kiveris et al. 2014)."""
    F = _functions()
    links = edges.select(F.col("src_key").alias("u"), F.col("dst_key").alias("v"))
    links = links.where(F.col("u") != F.col("v")).distinct()
    for round_ in range(1, MAX_STAR_ROUNDS + 1):
        links = _cut_lineage(_small_star(_large_star(links)))
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
    F = _functions()
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
        keys = _strings(members.column("key"))
        rank = priority_rank(members.column("pixel_count"), keys)
        if guard:
            i = pc.index_in(_strings(component_edges.column("src_key")), value_set=keys)
            j = pc.index_in(_strings(component_edges.column("dst_key")), value_set=keys)
            rep = greedy_star(len(keys), i.to_numpy(), j.to_numpy(), rank)
        else:
            rep = choose_representatives(np.zeros(len(keys), dtype=np.int64), rank)
        return pa.table(
            {"key": keys, "representative_key": keys.take(pa.array(rep))}, schema=_GROUP_SCHEMA
        )

    grouped = members.groupBy("member_root").cogroup(inside.groupBy("edge_root"))
    return grouped.applyInArrow(choose, to_spark_schema(_GROUP_SCHEMA))


def _number_by_smallest_key(spark, groups):
    """``(group_min, component_id)``: ids 0, 1, ... in order of each group's smallest key
    (a distributed sort and ``zipWithIndex``, not one partition holding every group)."""
    ordered = groups.select("group_min").orderBy("group_min")
    numbered = ordered.rdd.zipWithIndex().map(lambda pair: (pair[0][0], pair[1]))
    return spark.createDataFrame(numbered, schema="group_min string, component_id long")


def components_frame(keys, representatives, contaminated_keys):
    """DEDUP_COMPONENT rows for every key of ``keys`` (a frame with a ``key`` column)."""
    F = _functions()
    spark = keys.sparkSession
    nodes = keys.select("key").join(representatives, "key", "left")
    nodes = _cut_lineage(
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


# ------------------------------------------------------------------------------------- outputs


def _write_folder(frame, folder: Path, schema: pa.Schema) -> int:
    """One ``part-NNNNN.parquet`` per Spark partition of ``frame`` (in order), written by the task
    with ``schema`` (temp then rename, so a retried task rewrites its own file); rows written."""
    F = _functions()
    folder.mkdir(parents=True, exist_ok=True)
    target = str(folder)

    def write(batches):
        part = _pyspark().TaskContext.get().partitionId()
        with AtomicParquetWriter(Path(target) / f"part-{part:05d}.parquet", schema) as writer:
            for batch in batches:
                table = pa.Table.from_batches([batch]).select(schema.names)
                writer.write(table.cast(schema))
        yield pa.RecordBatch.from_pydict({"rows": pa.array([writer.rows], pa.int64())})

    written = frame.mapInArrow(write, "rows long").agg(F.count("*"), F.sum("rows")).first()
    if not written[0]:  # no partition at all: still leave a readable, empty dataset
        with AtomicParquetWriter(folder / "part-00000.parquet", schema):
            pass
    return int(written[1] or 0)


def _run_description(config, embeddings, records, evals) -> dict:
    return {
        "config": to_dict(config),
        "embeddings": [str(Path(p).absolute()) for p in embeddings],
        "records": [str(Path(p).absolute()) for p in records],
        "evals": [str(Path(p).absolute()) for p in evals],
    }


def _eval_set_names(folders: Sequence[Path]) -> list[str]:
    names = []
    for folder in folders:
        name = Path(folder).name or str(folder)
        candidate, n = name, 1
        while candidate in names:
            n += 1
            candidate = f"{name}-{n}"
        names.append(candidate)
    return names


def _component_stats(components) -> dict:
    """Like :func:`curation.index.components.component_stats`, from the components frame."""
    F = _functions()
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


def _eval_set_stats(eval_pairs, names: list[str]) -> dict:
    """Per evaluation set: pairs, pool images matched, the closest pairs as examples."""
    F = _functions()
    Window = _pyspark().sql.Window
    per_set = {name: {"pairs": 0, "pool_images_matched": 0, "examples": []} for name in names}
    if not names:
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


def run_spark_dedup(
    spark,
    embeddings: Sequence[Path],
    out: Path,
    config: SparkDedupConfig = SparkDedupConfig(),
    *,
    records: Sequence[Path] = (),
    evals: Sequence[Path] = (),
) -> dict:
    """Dedup the ``embeddings`` folders (and decontaminate them against ``evals``) into ``out``;
    returns the stats written to ``out/_stats.json``. A finished ``out`` (``_SUCCESS``) made with
    the same inputs and config is returned as is; made with others, it is an error."""
    F = _functions()
    out = Path(out)
    description = _run_description(config, embeddings, records, evals)
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

    pool = read_embedding_frame(spark, embeddings)
    n_pool, dim = _check_vectors(pool, "embedding folders")
    pixels = read_pixel_counts(spark, records) if records else None
    names = _eval_set_names(evals)
    eval_frames = []
    for name, folder in zip(names, evals):
        frame = read_embedding_frame(spark, [folder], "evaluation folder")
        n_eval, eval_dim = _check_vectors(frame, f"evaluation folder {folder}")
        if n_eval and n_pool and eval_dim != dim:
            raise SchemaError(f"evaluation folder {folder} is {eval_dim}-d but the pool is {dim}-d")
        eval_frames.append(frame.withColumn("eval_set", F.lit(name)))

    if n_pool:
        centroids = train_partition_centroids(pool, n_pool, config)
        pool_rows = pool.withColumn("eval_set", F.lit(None).cast("string"))
        assigned = assign_partitions(pool_rows, centroids, config.replicas)
        for frame in eval_frames:
            assigned = assigned.unionByName(
                assign_partitions(frame, centroids, max(config.eval_replicas, config.replicas))
            )
        pairs = _cut_lineage(partition_pairs(assigned, config))
    else:
        centroids = np.zeros((0, 0), np.float32)
        pairs = spark.createDataFrame([], to_spark_schema(_PAIR_SCHEMA))
    edges = _cut_lineage(
        _distinct_pairs(pairs.where(F.col("eval_set").isNull()), "src_key", "dst_key")
    )
    eval_pairs = _distinct_pairs(
        pairs.where(F.col("eval_set").isNotNull()), "eval_set", "src_key", "dst_key"
    )
    roots = connected_component_roots(edges)
    representatives = component_representatives(roots, edges, pixels, config.guard)
    contaminated = eval_pairs.select(F.col("src_key").alias("key")).distinct()
    components = _cut_lineage(components_frame(pool, representatives, contaminated))

    n_edges = _write_folder(
        edges.select("src_key", "dst_key", "similarity").orderBy("src_key", "dst_key"),
        out / "edges",
        DEDUP_EDGE_SCHEMA,
    )
    _write_folder(components.orderBy("key"), out / "components", DEDUP_COMPONENT_SCHEMA)

    reasons = {r["reason"]: int(r["count"]) for r in components.groupBy("reason").count().collect()}
    per_set = _eval_set_stats(eval_pairs, names)
    stats = {
        "images": n_pool,
        "dim": dim,
        "centroids": int(len(centroids)),
        "pairs": n_edges,
        "kept": reasons.get(DEDUP_REASON_KEPT, 0),
        "removed": {
            REASON_DUPLICATE: reasons.get(REASON_DUPLICATE, 0),
            REASON_CONTAMINATED: reasons.get(REASON_CONTAMINATED, 0),
        },
        "groups": _component_stats(components),
        "eval_sets": per_set,
        "guard": config.guard,
        "seconds": round(time.monotonic() - started, 3),
    }
    write_bytes_atomic(out / "_config.yaml", yaml.safe_dump(description, sort_keys=False).encode())
    write_json_atomic(out / "_stats.json", stats)
    write_bytes_atomic(out / SUCCESS, b"")
    logger.info(
        "spark dedup: %d images, %d kept, %s removed", n_pool, stats["kept"], stats["removed"]
    )
    return stats
