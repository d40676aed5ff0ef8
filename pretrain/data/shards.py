"""A resumable, deterministic stream of training batches over LVD shards or image folders.

Sources (each a :class:`SampleCatalog`: ``len``, ``key(i)``, ``read(i) -> bytes``):

* WebDataset tars with a Parquet index (``SHARD_INDEX_SCHEMA``: ``shard``, ``offset``,
  ``size`` per sample): one seek and read per sample, which is what the index is for.
* Parquet shards with the encoded image in an ``image`` column (and a ``key`` column).
* A plain folder of unlabeled images (``lvd pretrain --images DIR``): no labels, no classes.

Paths may be local or fsspec URLs.

The order is the official trainer's infinite stream made exact: the global stream is the
concatenation of per-epoch permutations (epoch ``e`` permuted by ``(seed, e)``), sample
``g`` of it goes to rank ``g % world_size``, and each rank cuts its part into batches that
its DataLoader workers take in turn (batch ``j`` to worker ``j % num_workers``, which is
the order a DataLoader returns them in). Ranks and workers thus never overlap, nothing is
skipped, and the position in the stream is one integer: the number of samples of the
global stream consumed (:class:`StreamPosition`). A resumed run starts its streams there
and continues at the exact next sample, even with another world size. Augmentations and
masks are seeded by the global sample / batch index, so resumed batches are bitwise those
of an uninterrupted run. WebDataset's own pipelines offer no such position.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from schemas import SHARD_INDEX_SCHEMA

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
INDEX_COLUMNS = ("key", "shard", "offset", "size")
PARQUET_COLUMNS = ("key", "image")


class ShardFormatError(ValueError):
    """A shard source that cannot be read as one of the supported layouts."""


# ---------------------------------------------------------------------- catalogs


def _fs_and_path(url: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(str(url))


def _join(base: str, relative: str) -> str:
    if "://" in relative or relative.startswith("/"):
        return relative
    return f"{base.rstrip('/')}/{relative}"


class SampleCatalog:
    """Random access to the encoded images of a source by sample index."""

    def __len__(self) -> int:
        raise NotImplementedError

    def key(self, index: int) -> str:
        raise NotImplementedError

    def read(self, index: int) -> bytes:
        raise NotImplementedError


class TarIndexCatalog(SampleCatalog):
    """WebDataset tars located through the Parquet shard index (``SHARD_INDEX_SCHEMA``).

    ``shard`` paths in the index are relative to the index file's folder (run-relative
    lineage) unless absolute or URLs.
    """

    def __init__(self, index_paths: Sequence[str]) -> None:
        tables = []
        for path in index_paths:
            fs, fs_path = _fs_and_path(path)
            with fs.open(fs_path, "rb") as handle:
                table = pq.read_table(handle)
            missing = [c for c in INDEX_COLUMNS if c not in table.column_names]
            if missing:
                raise ShardFormatError(f"shard index {path} lacks columns {missing}")
            base = str(path).rsplit("/", 1)[0] if "/" in str(path) else "."
            shards = [_join(base, s) for s in table.column("shard").to_pylist()]
            tables.append(
                table.select(["key", "offset", "size"]).append_column("path", pa.array(shards))
            )
        table = pa.concat_tables(tables)
        self._keys = table.column("key").to_pylist()
        self._paths = table.column("path").to_pylist()
        self._offsets = table.column("offset").to_numpy()
        self._sizes = table.column("size").to_numpy()

    def __len__(self) -> int:
        return len(self._keys)

    def key(self, index: int) -> str:
        return self._keys[index]

    def read(self, index: int) -> bytes:
        fs, path = _fs_and_path(self._paths[index])
        with fs.open(path, "rb") as handle:
            handle.seek(int(self._offsets[index]))
            return handle.read(int(self._sizes[index]))


class ParquetBytesCatalog(SampleCatalog):
    """Parquet shards holding ``key`` and the encoded ``image``; read a row group at a time
    (the last one is cached, so a worker reading neighbours pays one decode of the group)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._paths = list(paths)
        self._starts: list[int] = []  # first global index of each (file, row group)
        self._groups: list[tuple[int, int]] = []
        self._keys: list[str] = []
        total = 0
        for file_index, path in enumerate(self._paths):
            fs, fs_path = _fs_and_path(path)
            with fs.open(fs_path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                missing = [c for c in PARQUET_COLUMNS if c not in parquet.schema_arrow.names]
                if missing:
                    raise ShardFormatError(f"parquet shard {path} lacks columns {missing}")
                self._keys += parquet.read(columns=["key"]).column("key").to_pylist()
                for group in range(parquet.num_row_groups):
                    self._starts.append(total)
                    self._groups.append((file_index, group))
                    total += parquet.metadata.row_group(group).num_rows
        self._total = total
        self._read_group = lru_cache(maxsize=2)(self._load_group)

    def _load_group(self, group_index: int) -> list[bytes]:
        file_index, group = self._groups[group_index]
        fs, fs_path = _fs_and_path(self._paths[file_index])
        with fs.open(fs_path, "rb") as handle:
            return (
                pq.ParquetFile(handle)
                .read_row_group(group, columns=["image"])
                .column(0)
                .to_pylist()
            )

    def __len__(self) -> int:
        return self._total

    def key(self, index: int) -> str:
        return self._keys[index]

    def read(self, index: int) -> bytes:
        group_index = bisect.bisect_right(self._starts, index) - 1
        return self._read_group(group_index)[index - self._starts[group_index]]

    def __getstate__(self) -> dict[str, Any]:  # lru_cache wrappers do not pickle
        state = self.__dict__.copy()
        state.pop("_read_group")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._read_group = lru_cache(maxsize=2)(self._load_group)


class ImageFolderCatalog(SampleCatalog):
    """Every image file under a folder (recursively), sorted; the key is the relative path."""

    def __init__(self, root: str) -> None:
        fs, fs_path = _fs_and_path(root)
        self._protocol = root.split("://", 1)[0] + "://" if "://" in root else ""
        files = sorted(p for p in fs.find(fs_path) if p.lower().endswith(IMAGE_SUFFIXES))
        self._root = fs_path.rstrip("/")
        self._files = files

    def __len__(self) -> int:
        return len(self._files)

    def key(self, index: int) -> str:
        return self._files[index][len(self._root) + 1 :]

    def read(self, index: int) -> bytes:
        fs, path = _fs_and_path(self._protocol + self._files[index])
        with fs.open(path, "rb") as handle:
            return handle.read()


def open_catalog(source: str | os.PathLike[str]) -> SampleCatalog:
    """A catalog for ``source``: a shard index ``.parquet`` (tars), a folder holding
    ``index.parquet`` or ``*.tar`` with an index, a folder of Parquet shards with an
    ``image`` column, or a folder of plain images."""
    source = str(source)
    fs, path = _fs_and_path(source)
    if not fs.exists(path):
        raise FileNotFoundError(f"{source} does not exist")
    prefix = source.split("://", 1)[0] + "://" if "://" in source else ""
    if fs.isfile(path):
        files = [path]
    else:
        files = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
        files = [p for p in files if not p.rsplit("/", 1)[-1].startswith("_")]
    if files:
        try:
            with fs.open(files[0], "rb") as handle:
                names = pq.ParquetFile(handle).schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            raise ShardFormatError(f"{files[0]} cannot be read as Parquet: {exc}") from exc
        urls = [prefix + f for f in files]
        if all(c in names for c in INDEX_COLUMNS) and "image" not in names:
            return TarIndexCatalog(urls)
        if all(c in names for c in PARQUET_COLUMNS):
            return ParquetBytesCatalog(urls)
        raise ShardFormatError(
            f"{files[0]} is neither a shard index ({', '.join(INDEX_COLUMNS)}) nor a "
            f"Parquet shard with {', '.join(PARQUET_COLUMNS)} columns"
        )
    catalog = ImageFolderCatalog(source)
    if not len(catalog):
        raise ShardFormatError(f"{source} holds no shard index, Parquet shard or image file")
    return catalog


# ---------------------------------------------------------------------- order


def epoch_permutation(size: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch, a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch]).permutation(size)


@dataclass(frozen=True)
class StreamPosition:
    """Where the global stream stands: samples consumed by all ranks together."""

    samples_seen: int = 0

    def advanced(self, batches: int, batch_size: int, world_size: int) -> StreamPosition:
        return StreamPosition(self.samples_seen + batches * batch_size * world_size)

    def state_dict(self) -> dict[str, int]:
        return {"samples_seen": self.samples_seen}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> StreamPosition:
        return cls(int(state["samples_seen"]))


class SampleOrder:
    """Global stream index -> catalog index, caching the current epoch's permutation."""

    def __init__(self, size: int, seed: int) -> None:
        if size <= 0:
            raise ShardFormatError("the source holds no sample")
        self.size = size
        self.seed = seed
        self._epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)

    def __call__(self, global_index: int) -> int:
        epoch, within = divmod(global_index, self.size)
        if epoch != self._epoch:
            self._epoch, self._permutation = epoch, epoch_permutation(self.size, self.seed, epoch)
        return int(self._permutation[within])


def rank_batch_indices(
    batch: int, batch_size: int, rank: int, world_size: int, start: int
) -> list[int]:
    """Global stream indices of a rank's ``batch``-th batch, counted from ``start``."""
    first = batch * batch_size
    return [start + (first + i) * world_size + rank for i in range(batch_size)]


def decode_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class ShardStream(IterableDataset):
    """Infinite stream of one rank's batches, each ``make_batch(images, keys, seed)``.

    ``make_batch`` runs in the DataLoader workers (decode, multi-crop, masking, collate);
    it gets a seed unique to the batch's position in the global stream. Iterate through
    :func:`make_loader` (``batch_size=None``: batches are formed here). ``max_batches``
    ends the stream (for evaluation and tests); by default it never ends.
    """

    def __init__(
        self,
        catalog: SampleCatalog,
        batch_size: int,
        make_batch: Callable[[list[Image.Image], list[str], int], Any],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        position: StreamPosition | None = None,
        max_batches: int | None = None,
        decode: Callable[[bytes], Any] = decode_rgb,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.catalog = catalog
        self.batch_size = batch_size
        self.make_batch = make_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.position = position or StreamPosition()
        self.max_batches = max_batches
        self.decode = decode

    def batch_indices(self, batch: int) -> list[int]:
        return rank_batch_indices(
            batch, self.batch_size, self.rank, self.world_size, self.position.samples_seen
        )

    def batch_seed(self, batch: int) -> int:
        # The global index of the batch's first sample names it across ranks and resumes.
        return self.seed * 1_000_003 + self.batch_indices(batch)[0]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        order = SampleOrder(len(self.catalog), self.seed)
        batch = worker
        while self.max_batches is None or batch < self.max_batches:
            indices = [order(g) for g in self.batch_indices(batch)]
            keys = [self.catalog.key(i) for i in indices]
            images = [self.decode(self.catalog.read(i)) for i in indices]
            yield self.make_batch(images, keys, self.batch_seed(batch))
            batch += num_workers


def make_loader(stream: ShardStream, num_workers: int = 0, **kwargs: Any) -> DataLoader:
    """A DataLoader over ``stream`` that keeps batch order (workers take turns)."""
    return DataLoader(stream, batch_size=None, num_workers=num_workers, **kwargs)


# ---------------------------------------------------------------------- writers (tests, demos)


def _encode_png(image: Any) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tar_shards(
    samples: Sequence[tuple[str, Any]], out_dir: str, samples_per_shard: int
) -> str:
    """Write ``(key, image)`` pairs as WebDataset tars ``shard-NNNNN.tar`` plus
    ``index.parquet`` (the index columns the loader needs); return the index path.

    A small stand-in for the curation pipeline's shard writer, for tests and demos.
    """
    os.makedirs(out_dir, exist_ok=True)
    rows: dict[str, list[Any]] = {name: [] for name in SHARD_INDEX_SCHEMA.names}
    for start in range(0, len(samples), samples_per_shard):
        shard = f"shard-{start // samples_per_shard:05d}.tar"
        path = os.path.join(out_dir, shard)
        chunk = samples[start : start + samples_per_shard]
        encoded = {f"{key}.png": (key, _encode_png(image)) for key, image in chunk}
        with tarfile.open(path, "w") as tar:
            for name, (_, data) in encoded.items():
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        # Data offsets as a reader sees them (after any long-name headers).
        with tarfile.open(path, "r") as tar:
            for member in tar.getmembers():
                key, data = encoded[member.name]
                values = {"key": key, "shard": shard, "member": member.name}
                values |= {"offset": member.offset_data, "size": member.size}
                values["sha256"] = hashlib.sha256(data).hexdigest()
                for name in rows:
                    rows[name].append(values.get(name))
    index_path = os.path.join(out_dir, "index.parquet")
    pq.write_table(pa.table(rows, schema=SHARD_INDEX_SCHEMA), index_path)
    return index_path


def write_parquet_shards(
    samples: Sequence[tuple[str, Any]],
    out_dir: str,
    samples_per_shard: int,
    row_group_size: int = 8,
) -> list[str]:
    """Write ``(key, image)`` pairs as Parquet shards with ``key`` and ``image`` columns."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for start in range(0, len(samples), samples_per_shard):
        chunk = samples[start : start + samples_per_shard]
        table = pa.table(
            {"key": [k for k, _ in chunk], "image": [_encode_png(im) for _, im in chunk]},
            schema=pa.schema([("key", pa.string()), ("image", pa.binary())]),
        )
        path = os.path.join(out_dir, f"part-{start // samples_per_shard:05d}.parquet")
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
    return paths
