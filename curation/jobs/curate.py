"""The curation job: every curation stage that exists so far, in order, each resuming where a
previous run stopped (the Ray job ``jobs/curate_ray.py`` and ``lvd demo`` run it)."""

from __future__ import annotations

from curation.config import ConfigError
from curation.engines import Engine
from curation.jobs.config import CurationConfig
from curation.jobs.download import run_download
from curation.jobs.embed import run_embed
from curation.jobs.ingest import run_ingest, unique_image_shards


def run_curation(cfg: CurationConfig, engine: Engine) -> dict:
    """Download the URL list, ingest with exact and near-exact dedup, and (given a descriptor
    checkpoint) embed the unique images for copy detection. Returns each stage's stats."""
    if cfg.download.url_list is None:
        raise ConfigError("download.url_list is required (a URL list file or folder)")
    stats = {"download": run_download(cfg, engine)}
    stats.update(run_ingest(cfg, engine))
    if cfg.embed.checkpoint is not None:
        stats["embed_sscd"] = run_embed(cfg, engine, unique_image_shards(cfg))
    return stats
