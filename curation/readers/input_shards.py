"""User inputs as shards a stage can read: webdataset tars and Parquet files with key + image become
ENCODED_IMAGE shards, and :func:`input_kind` says which of our input schemas a shard holds."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from curation import storage
from curation.io import write_parquet_atomic
from curation.readers.image_files import IMAGE_SUFFIXES
from curation.readers.tar_index import TarIndexError, tar_index
from schemas import ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA, SchemaError
from schemas.validate import conform

# The input schemas of stages that read images, by the name configs use for them.
IMAGE_INPUT_SCHEMAS = {"image_record": IMAGE_RECORD_SCHEMA, "encoded_image": ENCODED_IMAGE_SCHEMA}


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read_shard_schema(path: Path) -> pa.Schema:
    """The schema of the Parquet file at ``path``; a :class:`SchemaError` naming the file if it is
    not one (corrupt, truncated, empty, another format)."""
    try:
        return storage.read_schema(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({_reason(exc)})") from exc


def _kind(schema: pa.Schema) -> str | None:
    for kind, expected in IMAGE_INPUT_SCHEMAS.items():
        if all(f.name in schema.names and schema.field(f.name).type == f.type for f in expected):
            return kind
    return None


def input_kind(path: Path) -> str:
    """``image_record`` or ``encoded_image``: which of our schemas a Parquet shard holds."""
    schema = read_shard_schema(path)
    kind = _kind(schema)
    if kind is not None:
        return kind
    raise SchemaError(
        f"{path}: neither IMAGE_RECORD nor ENCODED_IMAGE columns; found {schema.names} "
        "(a seed parquet needs at least 'key' and 'image' bytes: see conform_parquet_inputs)"
    )


def check_input_shards(paths: list[Path], kinds: tuple[str, ...]) -> list[Path]:
    """``paths`` unchanged if each is a readable Parquet shard of one of ``kinds`` (names of
    :data:`IMAGE_INPUT_SCHEMAS`); else a :class:`SchemaError` naming the first that is not, so a
    command refuses bad user input before any work starts."""
    for path in paths:
        kind = input_kind(storage.as_path(path))
        if kind not in kinds:
            raise SchemaError(
                f"{path}: holds {kind.upper()} rows; expected {' or '.join(k.upper() for k in kinds)}"
            )
    return list(paths)


def conform_parquet_inputs(paths: list[Path], out_dir: Path) -> list[Path]:
    """User Parquet files (``key`` + ``image`` bytes, other columns optional) as ENCODED_IMAGE
    shards; files that already hold one of our input schemas are used in place."""
    shards = []
    for path in sorted(storage.as_path(p) for p in paths):
        if _kind(read_shard_schema(path)) is not None:
            shards.append(path)
            continue
        target = storage.as_path(out_dir) / f"{path.stem}.parquet"
        if not target.is_file():
            try:
                table = conform(storage.read_table(path), ENCODED_IMAGE_SCHEMA)
            except SchemaError as exc:
                raise SchemaError(f"{path}: {exc}") from exc
            write_parquet_atomic(target, table, ENCODED_IMAGE_SCHEMA)
        shards.append(target)
    return shards


def webdataset_key(member: str) -> str:
    """A webdataset sample key: the member path up to the first dot of its file name."""
    folder, _, base = member.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{folder}/{stem}" if folder else stem


def index_webdataset_tars(tars: list[Path], out_dir: Path) -> list[Path]:
    """One ENCODED_IMAGE shard per tar, bytes left in the tar (``image`` null, offsets set)."""
    shards = []
    for number, tar in enumerate(sorted(storage.absolute(t) for t in tars)):
        target = storage.as_path(out_dir) / f"part-{number:05d}.parquet"
        shards.append(target)
        if target.is_file():
            continue
        try:
            members = tar_index(tar)
        except TarIndexError as exc:  # a user's file: say which, in one line
            raise SchemaError(f"not a readable webdataset tar: {exc}") from exc
        rows = [
            {
                "key": webdataset_key(member),
                "url": None,
                "image": None,
                "source_file": str(tar),
                "source_offset": offset,
                "source_size": size,
            }
            for member, (offset, size) in members.items()
            if Path(member).suffix.lower() in IMAGE_SUFFIXES
        ]
        table = pa.Table.from_pylist(rows, schema=ENCODED_IMAGE_SCHEMA)
        write_parquet_atomic(target, table, ENCODED_IMAGE_SCHEMA)
    return shards
