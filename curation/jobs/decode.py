"""The decode job: decode and validate ENCODED_IMAGE shards (a status per row)."""

from __future__ import annotations

from pathlib import Path

from curation.engines import Engine
from curation.jobs.config import CurationConfig
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.decode import DecodeStage


def run_decode(cfg: CurationConfig, engine: Engine, inputs: list[Path]) -> dict:
    """Decode and validate ENCODED_IMAGE shards into ``<run>/decode/``."""
    run = cfg.run_dir
    run.save_config(cfg)
    return run_stage(StageSpec(DecodeStage, cfg.decode), inputs, run.stage("decode"), engine)


def pack_folder(cfg: CurationConfig, folder: Path, into: str = "encoded") -> list[Path]:
    """Pack a folder of images into ENCODED_IMAGE shards under ``<run>/<into>/``."""
    files = list_image_files(folder)
    if not files:
        raise FileNotFoundError(f"no image files under {folder}")
    return write_encoded_shards(files, cfg.run_dir.root / into, rows_per_shard=cfg.rows_per_shard)
