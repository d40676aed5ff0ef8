"""Where data lives: the one place that turns a local path or a URI into a filesystem and a path.

A run root, its stage folders, input shards and image sources may be local paths or URIs
(``s3://``, ``gs://``, ``hdfs://``, ``file://``, or any other fsspec scheme). :func:`as_path` gives
a local path as a :class:`pathlib.Path` (so local runs behave exactly as before) and a URI as an
:class:`ObjectPath`, which offers the small part of the ``Path`` API the pipeline uses (``/``,
``name``, ``stem``, ``parent``, ``glob``, ``is_file``, reads and writes) on top of
:mod:`pyarrow.fs`. Schemes pyarrow lacks go through fsspec
(``pyarrow.fs.PyFileSystem(FSSpecHandler(...))``).

Credentials come only from the environment or the standard AWS / GCS config files; the pipeline
never writes them. An S3-compatible store's endpoint comes from ``engine.storage.endpoint_url``
(:func:`configure`, which exports it as ``AWS_ENDPOINT_URL`` so workers and pyarrow's own URI
resolution see the same store) or from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.

Object stores have no rename: writes to a URI go to the final name in one piece (an object appears
only once its upload completes); on local disk they go to a temp file that is renamed in.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
S3_SCHEMES = ("s3", "s3a")


@dataclass(frozen=True)
class StorageConfig:
    """``engine.storage``: where an S3-compatible store answers (None: AWS, or the environment)."""

    endpoint_url: str | None = None


def configure(config: StorageConfig | None) -> None:
    """Apply ``engine.storage``: export the endpoint so this process, its workers and pyarrow's own
    URI handling all talk to the same store."""
    if config is not None and config.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = config.endpoint_url
        _s3_filesystem.cache_clear()


def endpoint_environment() -> dict[str, str]:
    """This process's store endpoint (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``), for an engine
    to hand to workers that started before ``engine.storage`` was applied here. Credentials are
    not among them: each worker keeps its own environment's."""
    return {name: os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)}


def scheme_of(path: str | os.PathLike) -> str:
    """The URI scheme of ``path`` (``""`` for a local path; Windows drive letters are local)."""
    text = str(path) if isinstance(path, ObjectPath) else os.fspath(path)
    head, sep, _ = text.partition("://")
    return head.lower() if sep and len(head) > 1 and head.isalnum() else ""


def is_uri(path: str | os.PathLike) -> bool:
    """True for a remote URI (``file://`` counts as local)."""
    return scheme_of(path) not in ("", "file")


# ``Path("s3://b/k")`` collapses to ``s3:/b/k``: a config field typed ``Path`` still names a store.
_COLLAPSED = re.compile(r"^(s3|s3a|gs|gcs|hdfs|abfs|az|memory):/(?!/)(.*)$")


def as_path(path: str | os.PathLike) -> Path | ObjectPath:
    """A local path as ``Path`` (``file://`` URIs included), anything else as :class:`ObjectPath`."""
    if isinstance(path, ObjectPath):
        return path
    text = os.fspath(path)
    collapsed = _COLLAPSED.match(text)
    if collapsed:
        return ObjectPath(f"{collapsed.group(1)}://{collapsed.group(2)}")
    if isinstance(path, Path):
        return path
    scheme = scheme_of(text)
    if scheme == "":
        return Path(text)
    if scheme == "file":
        return Path(unquote(urlparse(text).path))
    return ObjectPath(text)


def absolute(path: str | os.PathLike) -> str:
    """``path`` as a string another process can open: an absolute local path, or the URI."""
    resolved = as_path(path)
    return str(resolved.resolve()) if isinstance(resolved, Path) else str(resolved)


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base / parts`` as a string, for local paths and URIs alike."""
    joined = as_path(base)
    for part in parts:
        joined = joined / part
    return str(joined)


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=16)
def _other_filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError):
        pass
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
        raise ValueError(f"no filesystem for {scheme}:// (pip install fsspec)") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))


def filesystem(path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``path``, and the path within it."""
    resolved = as_path(path)
    if isinstance(resolved, Path):
        return pafs.LocalFileSystem(), str(resolved.absolute())
    scheme, rest = resolved.scheme, resolved.key_path
    if scheme in S3_SCHEMES:
        endpoint = next((os.environ[n] for n in ENDPOINT_ENV if os.environ.get(n)), None)
        return _s3_filesystem(endpoint), rest
    fs = _other_filesystem(scheme, urlparse(str(resolved)).netloc)
    if isinstance(fs, pafs.PyFileSystem):  # fsspec: its own idea of a path (memory:// -> /...)
        return fs, fs.handler.fs._strip_protocol(str(resolved))
    return fs, rest


def info(path: str | os.PathLike) -> pafs.FileInfo:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner)


def exists(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file (object)."""
    return info(path).type == pafs.FileType.File


def size(path: str | os.PathLike) -> int | None:
    """The file's size in bytes, or None if it does not exist."""
    found = info(path)
    return found.size if found.type == pafs.FileType.File else None


def list_files(directory: str | os.PathLike, pattern: str = "*", recursive: bool = False) -> list:
    """Files under ``directory`` whose name matches ``pattern``, sorted, as ``as_path`` values."""
    base = as_path(directory)
    if isinstance(base, Path):
        if not base.is_dir():
            return []
        found = base.rglob(pattern) if recursive else base.glob(pattern)
        return sorted(p for p in found if p.is_file())
    fs, inner = filesystem(base)
    selector = pafs.FileSelector(inner, allow_not_found=True, recursive=recursive)
    names = [
        f.path[len(inner) :].lstrip("/")
        for f in fs.get_file_info(selector)
        if f.type == pafs.FileType.File
    ]
    return sorted(
        base / name for name in names if fnmatch.fnmatchcase(posixpath.basename(name), pattern)
    )


def read_table(paths, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file, or several (local paths or URIs, all on one filesystem), as one table.
    ``pq.read_table`` alone takes a list of URIs only with their filesystem: this passes it."""
    import pyarrow.parquet as pq

    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise FileNotFoundError("no Parquet files to read")
    resolved = [filesystem(p) for p in items]
    fs = resolved[0][0]
    return pq.read_table([inner for _, inner in resolved], columns=columns, filesystem=fs)


def read_schema(path: str | os.PathLike) -> pa.Schema:
    """The schema of one Parquet file (a local path or a URI), from its footer alone."""
    import pyarrow.parquet as pq

    fs, inner = filesystem(path)
    return pq.read_schema(inner, filesystem=fs)


def open_input(path: str | os.PathLike):
    """A random-access file (seek + read: ranged GETs on object stores); close it, or use ``with``."""
    fs, inner = filesystem(path)
    return fs.open_input_file(inner)


def read_bytes(path: str | os.PathLike, offset: int | None = None, length: int | None = None):
    """The file's bytes, or ``length`` bytes from ``offset`` (one ranged read)."""
    with open_input(path) as handle:
        if offset is None:
            return handle.read()
        return handle.read_at(length if length is not None else handle.size() - offset, offset)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file: on a store, one object under its final name; locally, temp then rename."""
    target = as_path(path)
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{target.name}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fs, inner = filesystem(target)
    with fs.open_output_stream(inner) as out:
        out.write(data)


def delete(path: str | os.PathLike) -> None:
    """Remove a file if it exists."""
    target = as_path(path)
    if isinstance(target, Path):
        target.unlink(missing_ok=True)
        return
    fs, inner = filesystem(target)
    if fs.get_file_info(inner).type == pafs.FileType.File:
        fs.delete_file(inner)


def delete_tree(directory: str | os.PathLike) -> None:
    """Remove a folder and everything under it (on a store: every object under the prefix)."""
    target = as_path(directory)
    if isinstance(target, Path):
        if target.is_dir():
            shutil.rmtree(target)
        return
    fs, inner = filesystem(target)
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        fs.delete_dir_contents(inner, missing_dir_ok=True)


def copy_tree(source: str | os.PathLike, target: str | os.PathLike) -> int:
    """Copy every file under ``source`` to the same relative name under ``target`` (``aws s3
    sync`` in a few lines); returns how many files were copied."""
    src_fs, src = filesystem(source)
    dst_fs, dst = filesystem(target)
    if isinstance(as_path(target), Path):  # local disk wants the folder first; stores do not
        dst_fs.create_dir(dst, recursive=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
    selector = pafs.FileSelector(src, recursive=True)
    return sum(1 for f in src_fs.get_file_info(selector) if f.type == pafs.FileType.File)


class ObjectPath:
    """A URI with the part of :class:`pathlib.Path`'s API the pipeline uses.

    Object stores have no folders: ``mkdir`` does nothing and ``is_dir`` is true when any object
    lies below. ``os.fspath`` gives the URI, so pyarrow readers accept an ``ObjectPath`` directly.
    """

    def __init__(self, uri: str):
        scheme, sep, rest = str(uri).partition("://")
        if not sep:
            raise ValueError(f"not a URI: {uri!r}")
        self.scheme = scheme.lower()
        self.key_path = posixpath.normpath(rest).rstrip("/") if rest.strip("/") else rest
        if self.key_path == ".":
            self.key_path = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key_path}"

    def __fspath__(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part: str | os.PathLike) -> ObjectPath:
        return ObjectPath(f"{self}/{os.fspath(part).strip('/')}")

    @property
    def name(self) -> str:
        return posixpath.basename(self.key_path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(f"{self.scheme}://{posixpath.dirname(self.key_path)}")

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def resolve(self) -> ObjectPath:
        return self

    absolute = resolve

    def as_uri(self) -> str:
        return str(self)

    def is_file(self) -> bool:
        return exists(self)

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_dir(self) -> bool:
        # One request (a listing of at most one key on S3), however many objects lie below.
        fs, inner = filesystem(self)
        return fs.get_file_info(inner).type == pafs.FileType.Directory

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a key's prefix exists once an object is written under it."""

    def glob(self, pattern: str) -> list[ObjectPath]:
        return list_files(self, pattern)

    def rglob(self, pattern: str) -> list[ObjectPath]:
        return list_files(self, pattern, recursive=True)

    def read_bytes(self) -> bytes:
        return read_bytes(self)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        write_bytes(self, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        write_bytes(self, text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not self.is_file():
            raise FileNotFoundError(str(self))
        delete(self)
