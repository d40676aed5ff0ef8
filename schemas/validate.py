"""Schema validation at stage boundaries.

A boundary check is strict about the columns a schema names and lenient about extra ones only when
asked: writers pass the schema explicitly, readers call :func:`validate` and get an error that names
the column, the expected type and the type found.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import schema_label


class SchemaError(ValueError):
    """A table does not match the schema a stage boundary declares."""


def validate(
    table: pa.Table | pa.RecordBatch, schema: pa.Schema, *, allow_extra: bool = False
) -> None:
    """Raise :class:`SchemaError` unless ``table`` has every field of ``schema`` with its exact type.

    Nullability is checked one way only: a non-nullable field must hold no nulls. Extra columns are
    an error unless ``allow_extra`` (user-supplied inputs such as URL lists carry free-form columns).
    """
    found = table.schema
    problems: list[str] = []
    for field in schema:
        index = found.get_field_index(field.name)
        if index < 0:
            problems.append(f"missing column {field.name!r} (expected {field.type})")
            continue
        found_type = found.field(index).type
        if found_type != field.type:
            problems.append(f"column {field.name!r}: expected {field.type}, found {found_type}")
            continue
        if not field.nullable and table.column(index).null_count:
            problems.append(
                f"column {field.name!r}: {table.column(index).null_count} nulls in a non-nullable column"
            )
    if not allow_extra:
        extra = [name for name in found.names if schema.get_field_index(name) < 0]
        if extra:
            problems.append(f"unexpected columns {extra}")
    if problems:
        raise SchemaError(f"table does not match {schema_label(schema)}: " + "; ".join(problems))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and order ``schema``'s columns and cast where the cast is lossless, then validate.

    Used on user inputs (a CSV read infers int64 where we want int32, say); never on our own outputs,
    which must already match.
    """
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            if field.nullable:
                columns.append(pa.nulls(table.num_rows, field.type))
                continue
            raise SchemaError(
                f"table does not match {schema_label(schema)}: missing column {field.name!r} "
                f"(expected {field.type})"
            )
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"table does not match {schema_label(schema)}: column {field.name!r}: "
                    f"expected {field.type}, found {column.type} ({exc})"
                ) from exc
        columns.append(column)
    out = pa.Table.from_arrays(columns, schema=schema)
    validate(out, schema)
    return out
