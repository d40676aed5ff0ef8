"""Read a stored image's bytes from where a record says they live: the one reader every stage,
job and trainer uses.

Records point at a tar member's data by (file, offset, size), or at a row of a Parquet file (the
``parquet`` download format: offset is null, the bytes are in the row with the record's key).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

IMAGE_COLUMNS = ("jpg", "png", "webp", "image")


class ImageBytesError(OSError):
    """The bytes a record points at cannot be read."""


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
                handle = open(path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise ImageBytesError(f"cannot open {path}: {exc}") from exc
            while len(self._files) >= self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files[path] = handle
        return handle

    def _read_parquet_row(self, path: str, key: str) -> bytes:
        if self._parquet is None or self._parquet[0] != path:
            if not Path(path).is_file():
                raise ImageBytesError(f"{key}: {path} does not exist")
            names = pq.read_schema(path).names
            column = next((c for c in IMAGE_COLUMNS if c in names), None)
            if column is None:
                raise ImageBytesError(f"{path} has no image column ({IMAGE_COLUMNS})")
            table = pq.read_table(path, columns=["key", column])
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
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
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
    Parquet file, since a worker would have to read the whole file for each of them.
    """
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
