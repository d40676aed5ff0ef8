"""Read URL lists: Parquet, CSV, TSV or JSON lines (each optionally gzipped), one file or a folder,
on local disk or an object store (``s3://bucket/urls/``: read through :mod:`curation.storage`).

The result has a ``url`` column (strings, never null), a ``caption`` column (strings or nulls) and,
if asked, the list's other columns, renamed where img2dataset reserves their names.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from curation import storage
from schemas import SchemaError

logger = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "tsv", "jsonl", "json")
# Column names img2dataset writes itself; user columns with these names are renamed "extra_<name>".
RESERVED_COLUMNS = frozenset(
    {
        "key",
        "caption",
        "url",
        "width",
        "height",
        "original_width",
        "original_height",
        "status",
        "error_message",
        "exif",
        "md5",
        "sha256",
        "sha512",
        "lvd_key",
        "lvd_part",
    }
)


def column_in_plan(name: str) -> str:
    """The name a URL list column has after reading (reserved names get an ``extra_`` prefix)."""
    return f"extra_{name}" if name in RESERVED_COLUMNS else name


def list_format(path: str | os.PathLike) -> str | None:
    """``parquet``, ``csv``, ``tsv`` or ``jsonl`` from the suffix (``.gz`` allowed), else None."""
    suffixes = [s.lower() for s in PurePosixPath(storage.as_path(path).name).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1].lstrip(".") not in FORMATS:
        return None
    fmt = suffixes[-1].lstrip(".")
    return "jsonl" if fmt == "json" else fmt


def url_list_files(path: str | os.PathLike) -> list:
    """The URL list files at ``path``: the file itself, or the supported files of a folder."""
    path = storage.as_path(path)
    if not path.is_file() and path.is_dir():
        files = [p for p in storage.list_files(path) if list_format(p)]
        if not files:
            raise FileNotFoundError(f"no URL list files ({', '.join(FORMATS)}) in {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"URL list {path} does not exist")
    if list_format(path) is None:
        raise SchemaError(f"URL list {path}: unsupported format; use one of {FORMATS} (or .gz)")
    return [path]


def fingerprint(files: list) -> list[dict]:
    """Name, size and sha256 of each file: what a resume compares to know the list is unchanged."""
    out = []
    for file in files:
        digest = hashlib.sha256()
        size = 0
        with storage.open_input(file) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        out.append({"name": file.name, "size": size, "sha256": digest.hexdigest()})
    return out


def _read_file(path) -> pa.Table:
    fmt = list_format(path)
    if fmt == "parquet":
        return storage.read_table(path)
    fs, inner = storage.filesystem(path)
    compression = "gzip" if str(path).lower().endswith(".gz") else None
    with fs.open_input_stream(inner, compression=compression) as stream:
        if fmt == "csv":
            return pacsv.read_csv(stream)
        if fmt == "tsv":
            return pacsv.read_csv(stream, parse_options=pacsv.ParseOptions(delimiter="\t"))
        return pajson.read_json(stream)


def _as_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column if column.type == pa.string() else pc.cast(column, pa.string())


def read_url_list(
    path: str | os.PathLike,
    *,
    url_col: str = "url",
    caption_col: str | None = "caption",
    keep_extra_columns: bool = True,
) -> pa.Table:
    """Read and normalise the URL list at ``path`` (see the module docstring)."""
    tables = []
    for file in url_list_files(path):
        try:
            table = _read_file(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SchemaError(f"URL list {file} could not be read: {exc}") from exc
        if url_col not in table.column_names:
            raise SchemaError(
                f"URL list {file} has no {url_col!r} column (found {table.column_names}); "
                "set download.url_col"
            )
        columns = {"url": pc.fill_null(_as_strings(table.column(url_col)), "")}
        if caption_col and caption_col in table.column_names:
            columns["caption"] = _as_strings(table.column(caption_col))
        else:
            columns["caption"] = pa.nulls(table.num_rows, pa.string())
        if keep_extra_columns:
            for name in table.column_names:
                if name in (url_col, caption_col):
                    continue
                out_name = column_in_plan(name)
                if out_name != name:
                    logger.warning("URL list column %r is reserved; kept as %r", name, out_name)
                columns[out_name] = table.column(name)
        tables.append(pa.table(columns))
    table = pa.concat_tables(tables, promote_options="permissive")
    logger.info("read %d URL(s) from %s", table.num_rows, path)
    return table
