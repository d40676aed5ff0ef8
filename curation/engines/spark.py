"""Spark engine: ``mapInArrow`` over shard tasks, one Spark task per shard.

The output schema of ``mapInArrow`` is derived from our pyarrow schema (:func:`to_spark_schema`).
Runs ``local[*]`` when started from plain Python, and on whatever master ``spark-submit`` gives.

Object storage: Spark reaches ``s3://`` (and every other store) through pyarrow inside the tasks,
not through the Hadoop S3A connector. Each task reads its input shard and writes its output and
marker with :mod:`curation.storage`, exactly as the local and Ray engines do, so no Hadoop jars or
``spark.hadoop.fs.s3a.*`` settings are needed. The driver's endpoint (``engine.storage``) travels
with each task; credentials come from the executors' own environment (``spark.executorEnv.*``, an
instance role) or the standard AWS config files.
"""

from __future__ import annotations

import logging
import os
import sys

import pyarrow as pa

from curation import storage
from curation.engines.base import Engine, EngineResourceError, EngineUnavailable
from curation.runner import ShardTask, process_shard
from curation.stages.base import StageSpec
from schemas import SHARD_RESULT_SCHEMA

logger = logging.getLogger(__name__)


def _import_pyspark():
    try:
        import pyspark.sql
        import pyspark.sql.types
    except ImportError as exc:
        raise EngineUnavailable(
            "the 'spark' engine needs PySpark: pip install 'lvd[spark]'"
        ) from exc
    return pyspark


def to_spark_schema(schema: pa.Schema):
    """The Spark ``StructType`` matching a pyarrow schema (fixed-size lists become arrays)."""
    T = _import_pyspark().sql.types

    def convert(dtype: pa.DataType):
        simple = {
            pa.string(): T.StringType(),
            pa.large_string(): T.StringType(),
            pa.int8(): T.ByteType(),
            pa.int16(): T.ShortType(),
            pa.int32(): T.IntegerType(),
            pa.int64(): T.LongType(),
            pa.float32(): T.FloatType(),
            pa.float64(): T.DoubleType(),
            pa.bool_(): T.BooleanType(),
            pa.binary(): T.BinaryType(),
            pa.large_binary(): T.BinaryType(),
        }
        if dtype in simple:
            return simple[dtype]
        if (
            pa.types.is_list(dtype)
            or pa.types.is_fixed_size_list(dtype)
            or pa.types.is_large_list(dtype)
        ):
            return T.ArrayType(convert(dtype.value_type), containsNull=False)
        if pa.types.is_struct(dtype):
            return T.StructType([T.StructField(f.name, convert(f.type), f.nullable) for f in dtype])
        raise TypeError(f"no Spark type for Arrow type {dtype}")

    return T.StructType([T.StructField(f.name, convert(f.type), f.nullable) for f in schema])


def get_spark_session(master: str | None = None, app_name: str = "lvd", conf: dict | None = None):
    """The active session, or a new one (``local[*]`` unless ``master`` or spark-submit says else)."""
    pyspark = _import_pyspark()
    # Python workers must run the interpreter (and so the packages) of the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = pyspark.sql.SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
        **(conf or {}),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _shard_partition(spec: StageSpec, storage_env: dict[str, str]):
    def run(batches):
        # Python workers outlive sessions and may predate engine.storage: give them its endpoint.
        os.environ.update(storage_env)
        stage = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if stage is None:
                stage = spec.build()  # once per Spark task, not per shard
            results = [process_shard(stage, ShardTask(**row)) for row in batch.to_pylist()]
            yield pa.RecordBatch.from_pylist(results, schema=SHARD_RESULT_SCHEMA)

    return run


class SparkEngine(Engine):
    name = "spark"
    img2dataset_distributor = "pyspark"

    @classmethod
    def from_config(cls, config) -> SparkEngine:
        storage.configure(config.storage)
        return cls(master=config.spark_master)

    def __init__(self, master: str | None = None, conf: dict | None = None):
        session_cls = _import_pyspark().sql.SparkSession
        # Stop the session on close only if this engine started it (tests and jobs may share one).
        self._owns_session = session_cls.getActiveSession() is None
        self.spark = get_spark_session(master, conf=conf)
        if self._owns_session:
            self.spark.sparkContext.setLogLevel("WARN")

    def check_resources(self, spec: StageSpec) -> None:
        """Spark schedules every task of a job alike (``spark.task.cpus``, GPUs per task from
        ``spark.task.resource.gpu.amount``): a stage asking for more than the session gives each
        task is refused with the setting to change, never run under-provisioned."""
        resources = spec.resources
        conf = self.spark.sparkContext.getConf()
        task_cpus = float(conf.get("spark.task.cpus", "1"))
        task_gpus = float(conf.get("spark.task.resource.gpu.amount", "0"))
        problems = []
        if resources.cpus > task_cpus:
            problems.append(
                f"{resources.cpus:g} CPU(s) per worker but spark.task.cpus={task_cpus:g} "
                f"(spark-submit --conf spark.task.cpus={int(resources.cpus + 0.999)})"
            )
        if resources.gpus > task_gpus:
            problems.append(
                f"{resources.gpus:g} GPU(s) per worker but spark.task.resource.gpu.amount="
                f"{task_gpus:g} (configure GPU scheduling: spark.executor.resource.gpu.amount and "
                "spark.task.resource.gpu.amount)"
            )
        if resources.memory_gb:
            problems.append(
                f"{resources.memory_gb:g} GB of memory per worker, which Spark cannot reserve per "
                "task (size spark.executor.memory for it and run with engine.name=ray, or lower "
                "the stage's memory declaration)"
            )
        if problems:
            raise EngineResourceError(f"stage {spec.name!r} needs " + "; ".join(problems))

    def run_shards(self, spec: StageSpec, tasks: list[ShardTask]) -> list[dict]:
        self.check_resources(spec)
        rows = [(t.input_path, t.output_path, t.marker_path) for t in tasks]
        frame = self.spark.createDataFrame(
            rows, schema="input_path string, output_path string, marker_path string"
        ).repartition(len(rows))
        result = frame.mapInArrow(
            _shard_partition(spec, storage.endpoint_environment()),
            to_spark_schema(SHARD_RESULT_SCHEMA),
        )
        collected = [row.asDict() for row in result.collect()]
        logger.info("spark engine: %d shard(s)", len(collected))
        return collected

    def close(self) -> None:
        if self._owns_session:
            self.spark.stop()
