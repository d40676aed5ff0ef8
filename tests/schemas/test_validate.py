import pyarrow as pa
import pytest

from schemas import (
    ALL_SCHEMAS,
    IMAGE_RECORD_SCHEMA,
    URL_LIST_SCHEMA,
    SchemaError,
    conform,
    embedding_schema,
    validate,
)


def _record(**overrides):
    row = {
        "key": "a",
        "url": "http://x/a.jpg",
        "sha256": "0" * 64,
        "width": 10,
        "height": 20,
        "status": "ok",
        "error_message": None,
        "source_file": "f.tar",
        "source_offset": 512,
        "source_size": 100,
    }
    row.update(overrides)
    return row


def test_valid_table_passes():
    table = pa.Table.from_pylist([_record()], schema=IMAGE_RECORD_SCHEMA)
    validate(table, IMAGE_RECORD_SCHEMA)


def test_type_mismatch_names_column_and_both_types():
    table = pa.Table.from_pylist([_record()], schema=IMAGE_RECORD_SCHEMA)
    bad = table.set_column(
        table.schema.get_field_index("width"), "width", table.column("width").cast(pa.int64())
    )
    with pytest.raises(SchemaError) as err:
        validate(bad, IMAGE_RECORD_SCHEMA)
    message = str(err.value)
    assert "'width'" in message
    assert "expected int32" in message
    assert "found int64" in message
    assert "image_record v1" in message


def test_missing_column_and_extra_column_are_reported():
    table = pa.Table.from_pylist([_record()], schema=IMAGE_RECORD_SCHEMA).drop_columns(["sha256"])
    table = table.append_column("surprise", pa.array([1]))
    with pytest.raises(SchemaError) as err:
        validate(table, IMAGE_RECORD_SCHEMA)
    assert "missing column 'sha256' (expected string)" in str(err.value)
    assert "unexpected columns ['surprise']" in str(err.value)


def test_nulls_in_non_nullable_column_are_rejected():
    table = pa.table(
        {"url": pa.array(["http://a", None]), "caption": pa.array([None, None], pa.string())}
    )
    with pytest.raises(SchemaError, match="'url': 1 nulls"):
        validate(table, URL_LIST_SCHEMA)


def test_conform_casts_losslessly_and_fills_nullable_columns():
    table = pa.table({"url": ["http://a", "http://b"], "extra": [1, 2]})
    out = conform(table, URL_LIST_SCHEMA)
    assert out.schema.names == ["url", "caption"]
    assert out.column("caption").null_count == 2


def test_conform_refuses_lossy_cast_with_column_name():
    dim4 = embedding_schema(4)
    table = pa.table({"key": ["a"], "embedding": [[1.0, 2.0, 3.0]], "model_id": ["m"]})
    with pytest.raises(SchemaError, match="'embedding'"):
        conform(table, dim4)


def test_embedding_schema_is_fixed_size_and_zero_copy_to_numpy():
    schema = embedding_schema(3)
    table = pa.table(
        {
            "key": ["a", "b"],
            "embedding": pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.float32(), 3)),
            "model_id": ["m", "m"],
            "status": ["ok", "ok"],
            "error_message": [None, None],
        },
        schema=schema,
    )
    matrix = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(2, 3)
    assert matrix[1, 2] == 6.0
    # A failed image keeps its row with a null embedding and its status.
    failed = pa.table(
        {
            "key": ["c"],
            "embedding": pa.nulls(1, pa.list_(pa.float32(), 3)),
            "model_id": ["m"],
            "status": ["decode_error"],
            "error_message": ["cannot identify image"],
        },
        schema=schema,
    )
    validate(failed, schema)
    with pytest.raises(SchemaError, match="'status': 1 nulls"):
        validate(failed.set_column(3, "status", pa.nulls(1, pa.string())), schema)
    with pytest.raises(ValueError):
        embedding_schema(0)


def test_every_schema_is_named_and_versioned():
    for name, schema in ALL_SCHEMAS.items():
        assert schema.metadata[b"lvd.schema"].decode() == name
        assert int(schema.metadata[b"lvd.version"]) >= 1
