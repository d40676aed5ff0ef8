"""Read a stored image's bytes from where a record says they live.

Records point at a tar member's data by (file, offset, size), or at a row of a Parquet file (the
``parquet`` download format: offset is null, the bytes are in the row with the record's key).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pyarrow.parquet as pq

IMAGE_COLUMNS = ("jpg", "png", "webp", "image")


class BlobReadError(OSError):
    """The bytes a record points at cannot be read."""


class BlobReader:
    """Reads many blobs, keeping a few files open (use as a context manager)."""

    def __init__(self, max_open: int = 8):
        self.max_open = max_open
        self._files: OrderedDict[str, object] = OrderedDict()
        self._parquet: tuple[str, dict[str, bytes]] | None = None

    def read(
        self, source_file: str | None, offset: int | None, size: int | None, key: str
    ) -> bytes:
        if not source_file:
            raise BlobReadError(f"{key}: no source file")
        if offset is None:
            return self._read_parquet_row(source_file, key)
        handle = self._open(source_file)
        handle.seek(offset)
        data = handle.read(size)
        if size is not None and len(data) != size:
            raise BlobReadError(
                f"{key}: {source_file} holds {len(data)} of {size} bytes at offset {offset}"
            )
        return data

    def _open(self, path: str):
        handle = self._files.pop(path, None)
        if handle is None:
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise BlobReadError(f"cannot open {path}: {exc}") from exc
            while len(self._files) >= self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files[path] = handle
        return handle

    def _read_parquet_row(self, path: str, key: str) -> bytes:
        if self._parquet is None or self._parquet[0] != path:
            if not Path(path).is_file():
                raise BlobReadError(f"{key}: {path} does not exist")
            names = pq.read_schema(path).names
            column = next((c for c in IMAGE_COLUMNS if c in names), None)
            if column is None:
                raise BlobReadError(f"{path} has no image column ({IMAGE_COLUMNS})")
            table = pq.read_table(path, columns=["key", column])
            self._parquet = (path, dict(zip(table["key"].to_pylist(), table[column].to_pylist())))
        data = self._parquet[1].get(key)
        if data is None:
            raise BlobReadError(f"{key}: no image bytes in {path}")
        return data

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self._parquet = None

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
