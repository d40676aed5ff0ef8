"""What the Spark dedup job (:mod:`curation.engines.spark_dedup`) reads, writes and converts:
EMBEDDING and IMAGE_RECORD inputs as DataFrames, Arrow columns as numpy matrices inside tasks,
folders of Parquet parts written by the tasks themselves, and lineage cuts for iterative plans."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.config import ConfigError
from curation.engines.base import EngineUnavailable
from curation.engines.spark import _import_pyspark
from curation.io import AtomicParquetWriter
from schemas import STATUS_OK, SchemaError


def pyspark_module():
    """pyspark, checked to offer ``applyInArrow`` (PySpark >= 4.0)."""
    pyspark = _import_pyspark()
    if not hasattr(pyspark.sql.GroupedData, "applyInArrow"):
        raise EngineUnavailable(
            f"the Spark dedup needs PySpark >= 4.0 (applyInArrow); this is {pyspark.__version__}: "
            "pip install -U 'pyspark>=4.0'"
        )
    return pyspark


def functions():
    return pyspark_module().sql.functions


# ---------------------------------------------------------------------------------------- inputs


def _parquet_groups(paths: Sequence[Path], what: str) -> list[list[str]]:
    """``paths`` as groups read together: each folder on its own, all plain files as one group."""
    folders, files = [], []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{what} {path} does not exist")
        if path.is_dir():
            if not any(p.name[0] not in "._" for p in path.glob("*.parquet")):
                raise FileNotFoundError(f"{what} {path} holds no .parquet files")
            folders.append([str(path)])
        elif path.suffix == ".parquet":
            files.append(str(path))
        else:
            raise ConfigError(f"{what} {path} is neither a folder nor a .parquet file")
    return folders + ([files] if files else [])


def read_embedding_frame(spark, paths: Sequence[Path], what: str = "embedding folder"):
    """DataFrame ``(key string, embedding array<float>)`` of the ``ok`` rows of EMBEDDING folders
    or shard files (all rows when there is no ``status`` column, as EMBEDDING v1)."""
    F, T = functions(), pyspark_module().sql.types
    frames = []
    for group in _parquet_groups(paths, what):
        frame = spark.read.parquet(*group)
        fields = {f.name: f.dataType for f in frame.schema.fields}
        embedding = fields.get("embedding")
        if not (
            isinstance(fields.get("key"), T.StringType)
            and isinstance(embedding, T.ArrayType)
            and isinstance(embedding.elementType, T.FloatType)
        ):
            raise SchemaError(
                f"{what} {group[0]} does not hold EMBEDDING shards: it needs columns key (string) "
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


def read_pixel_counts(spark, paths: Sequence[Path]):
    """DataFrame ``(key, pixel_count)`` from IMAGE_RECORD folders or shard files (width x height
    of ``ok`` rows)."""
    F = functions()
    frames = []
    for group in _parquet_groups(paths, "image record folder"):
        frame = spark.read.parquet(*group)
        missing = {"key", "width", "height"} - set(frame.columns)
        if missing:
            raise SchemaError(
                f"image record folder {group[0]} does not hold IMAGE_RECORD shards: missing "
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


def check_vectors(frame, what: str) -> tuple[int, int | None]:
    """Rows and width of an embedding frame; an error on mixed widths or repeated keys."""
    F = functions()
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


# ------------------------------------------------------------------------------ inside the tasks


def matrix(column) -> np.ndarray:
    """``(rows, d)`` float32 from an Arrow list column of equal-length float lists."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)


def strings(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column.cast(pa.string())


def limit_threads() -> None:
    """faiss inside a Spark task uses the task's cores, not the machine's."""
    import faiss

    context = pyspark_module().TaskContext.get()
    if context is not None:
        faiss.omp_set_num_threads(max(1, int(context.cpus())))


# --------------------------------------------------------------------------------------- plans


def cut_lineage(frame):
    """Materialise ``frame`` and forget how it was computed (iterative plans grow otherwise)."""
    if frame.sparkSession.sparkContext.getCheckpointDir():
        return frame.checkpoint(eager=True)
    return frame.localCheckpoint(eager=True)


def write_folder(frame, folder: Path, schema: pa.Schema) -> int:
    """One ``part-NNNNN.parquet`` per Spark partition of ``frame`` (in order), written by the task
    with ``schema`` (temp then rename, so a retried task rewrites its own file); rows written."""
    F = functions()
    folder.mkdir(parents=True, exist_ok=True)
    target = str(folder)

    def write(batches):
        part = pyspark_module().TaskContext.get().partitionId()
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
