"""What ``lvd download`` can be told, and where a download keeps its files.

Most fields are img2dataset's own options under the same names; the rest are what we add around it
(network safety, host round-robin, retry of failed samples). :func:`resume_signature` names the
fields a resume must not change (see :mod:`curation.download.plan`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from curation import storage
from curation.config import check_choices
from curation.download.network_guard import parse_networks
from curation.imaging import DEFAULT_MAX_PIXELS

StoragePath = Path | storage.ObjectPath  # a local folder, or one on an object store

# X-Robots-Tag directives that opt an image out of AI training or indexing (img2dataset's default).
OPT_OUT_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")


@dataclass(frozen=True)
class DownloadConfig:
    # Input: a URL list file (parquet, csv, tsv, jsonl; optionally .gz) or a folder of them.
    url_list: str | None = None
    url_col: str = "url"
    caption_col: str | None = "caption"  # None, or absent from the list: no captions
    # Other columns travel with each sample (tar .json, raw parquet).
    keep_extra_columns: bool = True
    # Output, as img2dataset writes it.
    output_format: Literal["webdataset", "parquet"] = "webdataset"
    number_sample_per_shard: int = 10_000
    # Image handling. The default keeps the served bytes untouched: nothing is decoded until
    # ingest, which decodes with a pixel limit. Any resize or size filter makes img2dataset decode.
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "no"
    image_size: int = 256  # used only when resize_mode is not "no"
    resize_only_if_bigger: bool = False
    skip_reencode: bool = True  # re-encode only if needed (format differs, alpha, resized)
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = 95
    min_image_size: int = 0
    max_aspect_ratio: float | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS  # OpenCV's decode limit in download workers
    max_response_bytes: int | None = 64 * 2**20  # larger bodies fail as response_too_large
    verify_sha256_col: str | None = None  # a column of expected sha256 hex digests
    # Fetching.
    processes_count: int | None = None  # None: one per CPU (multiprocessing distributor)
    thread_count: int = 64
    timeout: int = 10
    retries: int = 0
    max_shard_retry: int = 1
    user_agent_token: str | None = "lvd"
    disallowed_header_directives: tuple[str, ...] = OPT_OUT_DIRECTIVES  # () honours none
    # What img2dataset lacks.
    host_round_robin: bool = True
    # True: fetch from any address; a list of networks (["10.0.0.0/8", "127.0.0.1"]): from those
    # too; False: only from globally routable addresses (see curation/download/network_guard.py).
    allow_private_networks: bool | tuple[str, ...] = False
    retry_statuses: tuple[str, ...] = ("failed_to_download",)

    def __post_init__(self):
        check_choices(self)
        if not isinstance(self.allow_private_networks, bool):
            networks = tuple(str(n) for n in self.allow_private_networks)
            parse_networks(networks)  # a typo fails when the config is built
            object.__setattr__(self, "allow_private_networks", networks)


def needs_decode(settings: DownloadConfig) -> bool:
    """Whether img2dataset must decode images (else it stores the served bytes as they are)."""
    return (
        settings.resize_mode != "no"
        or not settings.skip_reencode
        or settings.min_image_size > 0
        or settings.max_aspect_ratio is not None
    )


def resume_signature(settings: DownloadConfig) -> dict:
    """The settings that shape the URL shards or the bytes stored; a resume must keep them all.

    Left out on purpose: processes/threads, timeout, retries, max_response_bytes, retry_statuses,
    the engine. They change how fast samples come and which transient failures happen, not what a
    finished shard holds.
    """
    return {
        "url_col": settings.url_col,
        "caption_col": settings.caption_col,
        "keep_extra_columns": settings.keep_extra_columns,
        "number_sample_per_shard": settings.number_sample_per_shard,
        "host_round_robin": settings.host_round_robin,
        "allow_private_networks": settings.allow_private_networks
        if isinstance(settings.allow_private_networks, bool)
        else list(settings.allow_private_networks),  # as plan.json stores it
        "output_format": settings.output_format,
        "resize_mode": settings.resize_mode,
        "image_size": settings.image_size if settings.resize_mode != "no" else None,
        "resize_only_if_bigger": settings.resize_only_if_bigger,
        "skip_reencode": settings.skip_reencode,
        "encode_format": settings.encode_format,
        "encode_quality": settings.encode_quality,
        "min_image_size": settings.min_image_size,
        "max_aspect_ratio": settings.max_aspect_ratio,
        "verify_sha256_col": settings.verify_sha256_col,
        "user_agent_token": settings.user_agent_token,
        "disallowed_header_directives": sorted(settings.disallowed_header_directives),
    }


class DownloadLayout:
    """``runs/<name>/download/``::

    part-NNNNN.parquet  DOWNLOADED_SAMPLE, one part per shard (every URL, with its status), and
                        blocked.parquet (URLs refused without a request): the stage's data, so
                        the folder reads as one dataset (pyarrow, Spark)
    _urls/              the URL plan: fetch/NNNNN.parquet (img2dataset's input), blocked.parquet
    _raw/               img2dataset's output as it writes it: NNNNN.tar, NNNNN.parquet,
                        NNNNN_stats.json
    _encoded/           ENCODED_IMAGE, one part per shard (downloaded images, by tar offset):
                        what ingest reads
    _shards/            per-shard conversion markers
    _retries/NNN/       one --retry-failed attempt (its own plan, raw output and merged tars)
    _config.yaml, _stats.json, _SUCCESS

    A download folder of the older layout (``samples/``, ``raw/``, ``encoded/``, ``retries/``,
    ``config.yaml``) is read and resumed in place.

    The root may be a local path or a URI (``s3://bucket/runs/<name>/download``): every path here
    is then an :class:`~curation.storage.ObjectPath` (see :mod:`curation.storage`).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = storage.as_path(root)
        legacy = (self.root / "samples").is_dir()
        self.urls = self.root / "_urls"
        self.raw = self.root / ("raw" if legacy else "_raw")
        self.samples = self.root / "samples" if legacy else self.root
        self.encoded = self.root / ("encoded" if legacy else "_encoded")
        self.markers = self.root / "_shards"
        self.retries = self.root / ("retries" if legacy else "_retries")

    def part(self, directory: StoragePath, shard_id: int) -> StoragePath:
        return directory / f"part-{shard_id:05d}.parquet"

    def marker(self, shard_id: int) -> StoragePath:
        return self.markers / f"part-{shard_id:05d}.json"

    def sample_parts(self) -> list[StoragePath]:
        return sorted(self.samples.glob("*.parquet"))

    def encoded_parts(self) -> list[StoragePath]:
        return sorted(self.encoded.glob("part-*.parquet"))
