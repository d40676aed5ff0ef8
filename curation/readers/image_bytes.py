"""Read a stored image's bytes from where a record says they live: the one reader every stage,
job and trainer uses.

Records point at a tar member's data by (file, offset, size), or at a row of a Parquet file (the
``parquet`` download format: offset is null, the bytes are in the row with the record's key). The
file may be a local path or a URI (read by byte range through :mod:`curation.storage`).

Lineage is stored run-relative: :func:`relative_lineage` turns ``source_file`` values under a run
root into paths relative to it when a shard is written, :func:`resolve_lineage` turns them back
into full paths (or URIs) against the root of the run that holds the shard when it is read.
Absolute paths and URIs outside the run (a user's seed folder, records of older runs) stay as they
are, so a run folder can be moved or synced to a store and still find its bytes. A shard also
records the run root it was written under (schema metadata ``lvd.lineage_root``): a reader that
does not know where the shard lies now (a table read with ``pq.read_table``) resolves against it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage

IMAGE_COLUMNS = ("jpg", "png", "webp", "image")


class ImageBytesError(OSError):
    """The bytes a record points at cannot be read."""


def _is_relative(path: str) -> bool:
    return (
        not storage.is_uri(path) and not path.startswith("file://") and not Path(path).is_absolute()
    )


LINEAGE_ROOT = b"lvd.lineage_root"


def lineage_schema(schema: pa.Schema, run_root: str | Path) -> pa.Schema:
    """``schema`` recording ``run_root`` as the root its relative ``source_file`` values hang from."""
    if "source_file" not in schema.names:
        return schema
    return schema.with_metadata(
        {**(schema.metadata or {}), LINEAGE_ROOT: storage.absolute(run_root)}
    )


def recorded_lineage_root(schema: pa.Schema) -> str | None:
    """The run root a shard was written under (None for shards written before it was recorded)."""
    value = (schema.metadata or {}).get(LINEAGE_ROOT)
    return value.decode() if value else None


def relative_lineage(table: pa.Table, run_root: str | Path) -> pa.Table:
    """``table`` with each ``source_file`` under ``run_root`` made relative to it (POSIX form)."""
    if "source_file" not in table.column_names or not table.num_rows:
        return table
    root = storage.absolute(run_root).rstrip("/") + "/"
    relative = [
        v[len(root) :] if v and not _is_relative(v) and v.startswith(root) else v
        for v in table.column("source_file").to_pylist()
    ]
    return table.set_column(
        table.schema.get_field_index("source_file"),
        table.schema.field("source_file"),
        pa.array(relative, pa.string()),
    )


def resolve_lineage(table: pa.Table, run_root: str | Path) -> pa.Table:
    """``table`` with each run-relative ``source_file`` joined onto ``run_root``, made absolute
    (a relative root such as ``runs/demo`` would give paths that look run-relative again, and a
    later :func:`relative_lineage` would keep them as such)."""
    if "source_file" not in table.column_names or not table.num_rows:
        return table
    values = table.column("source_file").to_pylist()
    if not any(v and _is_relative(v) for v in values):
        return table
    root = storage.absolute(run_root)
    resolved = [storage.join(root, v) if v and _is_relative(v) else v for v in values]
    return table.set_column(
        table.schema.get_field_index("source_file"),
        table.schema.field("source_file"),
        pa.array(resolved, pa.string()),
    )


class ImageBytesReader:
    """Reads many images' bytes, keeping a few files open (use as a context manager)."""

    def __init__(self, max_open: int = 8):
        self.max_open = max_open
        self._files: OrderedDict[str, object] = OrderedDict()
        self._parquet: tuple[str, dict[str, bytes]] | None = None

    def read(
        self, source_file: str | None, offset: int | None, size: int | None, key: str
    ) -> bytes:
        if not source_file:
            raise ImageBytesError(f"{key}: no source file")
        if offset is None:
            return self._read_parquet_row(source_file, key)
        handle = self._open(source_file)
        handle.seek(offset)
        data = handle.read(size)
        if size is not None and len(data) != size:
            raise ImageBytesError(
                f"{key}: {source_file} holds {len(data)} of {size} bytes at offset {offset}"
            )
        return data

    def _open(self, path: str):
        handle = self._files.pop(path, None)
        if handle is None:
            try:
                handle = storage.open_input(path)
            except OSError as exc:
                raise ImageBytesError(f"cannot open {path}: {exc}") from exc
            while len(self._files) >= self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files[path] = handle
        return handle

    def _read_parquet_row(self, path: str, key: str) -> bytes:
        if self._parquet is None or self._parquet[0] != path:
            if not storage.exists(path):
                raise ImageBytesError(f"{key}: {path} does not exist")
            fs, inner = storage.filesystem(path)
            names = pq.read_schema(inner, filesystem=fs).names
            column = next((c for c in IMAGE_COLUMNS if c in names), None)
            if column is None:
                raise ImageBytesError(f"{path} has no image column ({IMAGE_COLUMNS})")
            table = pq.read_table(inner, columns=["key", column], filesystem=fs)
            self._parquet = (path, dict(zip(table["key"].to_pylist(), table[column].to_pylist())))
        data = self._parquet[1].get(key)
        if data is None:
            raise ImageBytesError(f"{key}: no image bytes in {path}")
        return data

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self._parquet = None

    def __enter__(self) -> ImageBytesReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Loaders: picklable zero-argument callables returning an image's bytes, for decode workers.
Loader = Callable[[], bytes | None]


def inline_bytes(data: bytes | None) -> bytes | None:
    """A loader for bytes already at hand."""
    return data


def read_source_bytes(path: str, offset: int, size: int) -> bytes:
    """A loader for a byte range of a file (a tar member's data, or a whole loose file)."""
    try:
        data = storage.read_bytes(path, offset, size)
    except OSError as exc:
        raise ImageBytesError(f"cannot read {path}: {exc}") from exc
    if len(data) != size:
        raise ImageBytesError(f"{path}: wanted {size} bytes at offset {offset}, got {len(data)}")
    return data


def raise_read_error(message: str) -> bytes:
    """A loader for bytes that could not be found: fails as a read error when called."""
    raise ImageBytesError(message)


def image_bytes_loaders(table: pa.Table) -> list[Loader]:
    """One loader per row of a table with ``key``, ``source_file``/``offset``/``size`` (and an
    optional inline ``image`` column).

    Inline bytes and tar members (read lazily by byte range, cheap to ship to worker processes)
    stay loaders; rows of a ``parquet`` download (null offset) are read here, one file read per
    Parquet file, since a worker would have to read the whole file for each of them. Run-relative
    ``source_file`` values left unresolved resolve against the run root the shard recorded.
    """
    recorded = recorded_lineage_root(table.schema)
    if recorded is not None:
        table = resolve_lineage(table, recorded)
    inline = (
        table.column("image").to_pylist()
        if "image" in table.column_names
        else [None] * table.num_rows
    )
    loaders: list[Loader] = []
    with ImageBytesReader() as reader:
        for key, data, path, offset, size in zip(
            table.column("key").to_pylist(),
            inline,
            table.column("source_file").to_pylist(),
            table.column("source_offset").to_pylist(),
            table.column("source_size").to_pylist(),
        ):
            if data is not None or path is None:
                loaders.append(partial(inline_bytes, data))
            elif offset is not None:
                loaders.append(partial(read_source_bytes, path, offset, size or 0))
            else:
                try:
                    loaders.append(partial(inline_bytes, reader.read(path, None, size, key)))
                except ImageBytesError as exc:
                    loaders.append(partial(raise_read_error, str(exc)))
    return loaders
