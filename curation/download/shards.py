"""From img2dataset's raw shards to our tables.

img2dataset writes, per shard ``NNNNN``: ``NNNNN.tar`` (webdataset: ``<key>.jpg``, ``.txt``,
``.json``) or ``NNNNN.parquet`` with the bytes inline, ``NNNNN.parquet`` with one metadata row per
URL, and, last, ``NNNNN_stats.json``. A shard is finished iff its stats file parses. From it we write
``samples/part-NNNNN.parquet`` (DOWNLOADED_SAMPLE: every URL with its status) and
``encoded/part-NNNNN.parquet`` (ENCODED_IMAGE: each downloaded image by tar path, data offset and
size; bytes inline for the parquet format), then a marker, so conversion resumes too.

The raw folder may be on an object store (img2dataset writes there through fsspec): its files are
listed and read through :mod:`curation.storage`, and a tar there is indexed in one streamed read.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.download.config import DownloadLayout
from curation.download.kill_points import kill_point
from curation.download.network_guard import STATUS_BLOCKED, STATUS_RESPONSE_TOO_LARGE
from curation.download.plan import SHARD_DIGITS
from curation.io import write_json_atomic, write_parquet_atomic
from curation.readers.tar_index import tar_members
from schemas import DOWNLOADED_SAMPLE_SCHEMA, ENCODED_IMAGE_SCHEMA

logger = logging.getLogger(__name__)

STATUS_SUCCESS = "success"
STATUS_FAILED_TO_DOWNLOAD = "failed_to_download"
STATUS_OPTED_OUT = "opted_out"
STATUS_MISSING_IN_SHARD = "missing_in_shard"
# img2dataset's error message when an X-Robots-Tag directive opts the image out.
_OPT_OUT_MESSAGE = "disallowed by X-Robots-Tag"


def shard_stem(shard_id: int) -> str:
    return f"{shard_id:0{SHARD_DIGITS}d}"


def finished_shards(
    raw_dir: str | os.PathLike,
    output_format: str,
    *,
    repair: bool = True,
    known: frozenset[int] = frozenset(),
) -> set[int]:
    """Shards img2dataset finished. With ``repair`` (never while img2dataset runs), a stats file
    that does not parse or whose data files are missing (a kill while it was written) is removed,
    so that img2dataset redoes that shard. Shards in ``known`` (already seen finished by a caller
    that polls) are taken as finished without rereading their files: on a store, one listing per
    poll instead of three requests per shard."""
    done = set()
    for stats in storage.list_files(raw_dir, "*_stats.json"):
        stem = stats.name[: -len("_stats.json")]
        if stem.isdigit() and int(stem) in known:
            done.add(int(stem))
            continue
        data = stats.with_name(
            f"{stem}.tar" if output_format == "webdataset" else f"{stem}.parquet"
        )
        try:
            shard_id = int(stem)
            json.loads(stats.read_text())
            ok = data.is_file() and stats.with_name(f"{stem}.parquet").is_file()
        except ValueError:
            ok = False
        if not ok:
            if repair:
                logger.warning(
                    "removing unfinished shard stats %s; the shard will be redone", stats
                )
                stats.unlink()
            continue
        done.add(shard_id)
    return done


def map_status(status: pa.ChunkedArray, error: pa.ChunkedArray) -> pa.Array:
    """img2dataset's statuses, with blocked connections, oversized responses and robots opt-outs
    told apart from other download failures."""
    message = pc.fill_null(error, "")
    failed = pc.equal(status, STATUS_FAILED_TO_DOWNLOAD)
    blocked = pc.and_(failed, pc.match_substring(message, f"{STATUS_BLOCKED}:"))
    opted_out = pc.and_(failed, pc.match_substring(message, _OPT_OUT_MESSAGE))
    too_large = pc.and_(failed, pc.match_substring(message, f"{STATUS_RESPONSE_TOO_LARGE}:"))
    out = pc.if_else(blocked, STATUS_BLOCKED, status)
    out = pc.if_else(too_large, STATUS_RESPONSE_TOO_LARGE, out)
    return pc.if_else(opted_out, STATUS_OPTED_OUT, out)


def _column(table: pa.Table, name: str, dtype: pa.DataType) -> pa.ChunkedArray:
    if name in table.column_names:
        return pc.cast(table.column(name), dtype)
    return pa.chunked_array([pa.nulls(table.num_rows, dtype)])


def convert_shard(
    layout: DownloadLayout, shard_id: int, output_format: str, encode_format: str
) -> dict:
    """Write the samples and encoded parts of a finished raw shard; returns its status counts."""
    stem = shard_stem(shard_id)
    meta = storage.read_table(layout.raw / f"{stem}.parquet")
    meta = meta.sort_by("key")  # img2dataset writes in completion order
    status = map_status(meta.column("status"), meta.column("error_message"))
    success = pc.equal(status, STATUS_SUCCESS)
    keys = meta.column("key").to_pylist()
    member = [f"{k}.{encode_format}" for k in keys]
    if output_format == "webdataset":
        source = layout.raw / f"{stem}.tar"
        members = tar_members(source)
        offsets = [members.get(m, (None, None)) for m in member]
    else:
        source = layout.raw / f"{stem}.parquet"
        offsets = [(None, None)] * len(keys)
    success_list = success.to_pylist()
    status_list = status.to_pylist()
    errors = meta.column("error_message").to_pylist()
    for i, ok in enumerate(success_list):
        if ok and output_format == "webdataset" and offsets[i][0] is None:
            status_list[i] = STATUS_MISSING_IN_SHARD
            errors[i] = f"{member[i]} is not in {source.name}"
            success_list[i] = False
    source_file = [storage.absolute(source) if ok else None for ok in success_list]
    samples = pa.table(
        {
            "key": meta.column("key"),
            "url": pc.fill_null(_column(meta, "url", pa.string()), ""),
            "caption": _column(meta, "caption", pa.string()),
            "status": pa.array(status_list, pa.string()),
            "error_message": pa.array(errors, pa.string()),
            "sha256": _column(meta, "sha256", pa.string()),
            "width": _column(meta, "width", pa.int32()),
            "height": _column(meta, "height", pa.int32()),
            "original_width": _column(meta, "original_width", pa.int32()),
            "original_height": _column(meta, "original_height", pa.int32()),
            "source_file": pa.array(source_file, pa.string()),
            "source_member": pa.array(
                [
                    m if ok and output_format == "webdataset" else None
                    for m, ok in zip(member, success_list)
                ],
                pa.string(),
            ),
        },
        schema=DOWNLOADED_SAMPLE_SCHEMA,
    )
    keep = pa.array(success_list, pa.bool_())
    if output_format == "webdataset":
        images = pa.chunked_array([pa.nulls(len(keys), pa.binary())])
        sizes = [size for _, size in offsets]
    else:
        images = pc.cast(meta.column(encode_format), pa.binary())
        sizes = pc.binary_length(images).to_pylist()
    encoded = pa.table(
        {
            "key": meta.column("key"),
            "url": samples.column("url"),
            "image": images,
            "source_file": samples.column("source_file"),
            "source_offset": pa.array([o for o, _ in offsets], pa.int64()),
            "source_size": pa.array(sizes, pa.int64()),
        },
        schema=ENCODED_IMAGE_SCHEMA,
    ).filter(keep)
    write_parquet_atomic(layout.part(layout.samples, shard_id), samples, DOWNLOADED_SAMPLE_SCHEMA)
    write_parquet_atomic(layout.part(layout.encoded, shard_id), encoded, ENCODED_IMAGE_SCHEMA)
    counts = Counter(status_list)
    kill_point("shard_converted")
    write_json_atomic(
        layout.marker(shard_id), {"shard": stem, "status": dict(sorted(counts.items()))}
    )
    return counts
