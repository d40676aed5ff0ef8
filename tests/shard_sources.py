"""SHARD_SOURCE rows for the shard writer's tests, with real image bytes in the three places a
record can point at: a download tar (run-relative path, offset, size), a Parquet download file
(offset null, bytes in its ``image`` column by key) and inline (seed images, ``image`` set).

Images are tiny JPEG / PNG / WEBP files of distinct colours and sizes, so the whole set costs
milliseconds to make and read back.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.io import write_parquet_atomic
from curation.readers.tar_index import tar_index
from curation.rundir import StageDir
from curation.runner import TABLE_OUTPUT, run_table_stage
from schemas import SHARD_SOURCE_SCHEMA

FORMATS = (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"))


def image_bytes(number: int, size: tuple[int, int] | None = None) -> tuple[bytes, str, int, int]:
    """An image of its own colour and size; returns (bytes, extension, width, height)."""
    pil_format, extension = FORMATS[number % len(FORMATS)]
    width, height = size or (16 + 3 * number, 12 + 2 * (number % 5))
    image = Image.new("RGB", (width, height), (37 * number % 256, 91 * number % 256, 150))
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format)
    return buffer.getvalue(), extension, width, height


def _row(key: str, data: bytes, width: int, height: int, **values) -> dict:
    row = {
        "key": key,
        "url": f"http://images.example/{key}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": width,
        "height": height,
        "status": "ok",
        "error_message": None,
        "source_file": None,
        "source_offset": None,
        "source_size": None,
        "image": None,
        "seed_dataset": "pets",
        "mode": "sample",
        "seed_key": "seed-0",
        "rank": 1,
        "similarity": 0.75,
        "cluster_id": None,
    }
    row.update(values)
    return row


def write_sources(run_root: Path, n_tar: int = 8, n_parquet: int = 3, n_inline: int = 3):
    """Source rows of a run at ``run_root`` (its ``download/`` files written here); returns the
    SHARD_SOURCE table and ``key -> bytes`` of every image."""
    run_root = Path(run_root)
    (run_root / "download").mkdir(parents=True, exist_ok=True)
    rows, expected = [], {}
    tar_path = run_root / "download" / "00000.tar"
    members = {}
    with tarfile.open(tar_path, "w") as tar:
        for number in range(n_tar):
            data, extension, _, _ = image_bytes(number)
            key = f"pool{number:04d}"
            member = tarfile.TarInfo(f"{key}.{extension}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
            members[f"{key}.{extension}"] = (key, number, data)
    for name, (offset, size) in tar_index(tar_path).items():
        key, number, data = members[name]
        _, _, width, height = image_bytes(number)
        mode = ("sample", "cluster")[number % 2]
        rows.append(
            _row(
                key,
                data,
                width,
                height,
                source_file="download/00000.tar",
                source_offset=offset,
                source_size=size,
                seed_dataset=("pets", "cars")[number % 2],
                mode=mode,
                seed_key=f"seed-{number % 3}",
                rank=number % 4 + 1,
                cluster_id=7 if mode == "cluster" else None,
            )
        )
        expected[key] = data
    parquet_rows = []
    for number in range(n_tar, n_tar + n_parquet):
        data, _, width, height = image_bytes(number)
        key = f"pool{number:04d}"
        parquet_rows.append({"key": key, "image": data})
        rows.append(
            _row(
                key,
                data,
                width,
                height,
                source_file="download/00001.parquet",
                source_size=len(data),
                seed_dataset="cars",
            )
        )
        expected[key] = data
    if parquet_rows:
        pq.write_table(pa.Table.from_pylist(parquet_rows), run_root / "download" / "00001.parquet")
    for number in range(n_inline):
        data, _, width, height = image_bytes(50 + number)
        key = f"seed{number:04d}"
        rows.append(
            _row(
                key,
                data,
                width,
                height,
                image=data,
                source_file=f"/seed_images/{key}.png",
                source_offset=0,
                source_size=len(data),
                seed_dataset="pets",
                mode="as_is",
                seed_key=None,
                rank=None,
                similarity=None,
            )
        )
        expected[key] = data
    table = pa.Table.from_pylist(rows, schema=SHARD_SOURCE_SCHEMA)
    return table, expected


def retrieved_images(run_root: Path, table: pa.Table) -> list[Path]:
    """``table`` as the run's finished ``retrieved_images/`` (what the retrieval job writes)."""
    stage = StageDir(Path(run_root) / "retrieved_images")
    run_table_stage("retrieved_images", lambda: table, SHARD_SOURCE_SCHEMA, stage)
    return [stage.path / TABLE_OUTPUT]


def split_sources(folder: Path, table: pa.Table, parts: int) -> list[Path]:
    """``table`` in ``parts`` Parquet files under ``folder`` (rows dealt round-robin)."""
    paths = []
    for part in range(parts):
        path = Path(folder) / f"part-{part:05d}.parquet"
        write_parquet_atomic(
            path, table.take(list(range(part, table.num_rows, parts))), SHARD_SOURCE_SCHEMA
        )
        paths.append(path)
    return paths
