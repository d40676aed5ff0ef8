import sys

import pyarrow as pa
import pytest

from curation.engines import ENGINES, EngineUnavailable, get_engine
from curation.engines.spark import to_spark_schema
from schemas import SHARD_RESULT_SCHEMA, embedding_schema


def test_unknown_engine_lists_the_choices():
    with pytest.raises(ValueError, match=r"choose one of \['local', 'ray', 'spark'\]"):
        get_engine("dask")


@pytest.mark.parametrize(
    ("name", "module", "extra"), [("ray", "ray", "lvd[ray]"), ("spark", "pyspark", "lvd[spark]")]
)
def test_missing_engine_package_names_the_extra(monkeypatch, name, module, extra):
    # A None entry in sys.modules makes `import module` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, module, None)
    for loaded in [m for m in sys.modules if m.startswith(f"{module}.")]:
        monkeypatch.setitem(sys.modules, loaded, None)
    with pytest.raises(EngineUnavailable, match=extra.replace("[", r"\[").replace("]", r"\]")):
        get_engine(name)


def test_spark_schema_is_derived_from_arrow(require):
    require("pyspark")
    from pyspark.sql import types as T

    struct = to_spark_schema(SHARD_RESULT_SCHEMA)
    assert struct.names == SHARD_RESULT_SCHEMA.names
    assert struct["rows_in"].dataType == T.LongType()
    assert not struct["shard"].nullable
    emb = to_spark_schema(embedding_schema(8))
    assert emb["embedding"].dataType == T.ArrayType(T.FloatType(), containsNull=False)
    with pytest.raises(TypeError, match="no Spark type"):
        to_spark_schema(pa.schema([("t", pa.timestamp("s"))]))


def test_registry_lists_only_real_engines():
    assert set(ENGINES) == {"local", "ray", "spark"}
