"""Turn loose image files (a folder, a synthetic web) into ENCODED_IMAGE Parquet shards."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from curation.io import write_parquet_atomic
from schemas import ENCODED_IMAGE_SCHEMA

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def list_image_files(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def write_encoded_shards(
    files: Iterable[Path],
    out_dir: Path,
    *,
    rows_per_shard: int = 256,
    key_prefix: str = "",
    url_prefix: str | None = None,
) -> list[Path]:
    """Pack files into ``part-NNNNN.parquet`` shards (bytes inline), keyed by file stem.

    Deterministic: the same files give the same shards. An existing complete shard is kept.
    Relative paths are taken from the working directory (``url`` is a ``file://`` URI, which must
    be absolute).
    """
    files = sorted(Path(f).absolute() for f in files)
    if rows_per_shard <= 0:
        raise ValueError("rows_per_shard must be positive")
    out_dir = Path(out_dir)
    shards = []
    for start in range(0, len(files), rows_per_shard):
        path = out_dir / f"part-{start // rows_per_shard:05d}.parquet"
        shards.append(path)
        if path.is_file():
            continue
        chunk = files[start : start + rows_per_shard]
        rows = []
        for file in chunk:
            data = file.read_bytes()
            rows.append(
                {
                    "key": f"{key_prefix}{file.stem}",
                    "url": f"{url_prefix.rstrip('/')}/{file.name}" if url_prefix else file.as_uri(),
                    "image": data,
                    "source_file": str(file.resolve()),
                    "source_offset": 0,
                    "source_size": len(data),
                }
            )
        write_parquet_atomic(
            path, pa.Table.from_pylist(rows, schema=ENCODED_IMAGE_SCHEMA), ENCODED_IMAGE_SCHEMA
        )
    logger.info("packed %d file(s) into %d shard(s) under %s", len(files), len(shards), out_dir)
    return shards
