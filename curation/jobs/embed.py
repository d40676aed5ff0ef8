"""The embed job: SSCD descriptors or DINOv2 retrieval embeddings of a run's images, or of a seed
or evaluation set, into ``<run>/<stage>/``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from curation import storage
from curation.engines import Engine
from curation.jobs.config import CurationConfig
from curation.readers.input_shards import input_kind
from curation.runner import run_stage
from curation.stages.embed import embed_stage_spec
from schemas import SchemaError

logger = logging.getLogger(__name__)


def run_embed(
    cfg: CurationConfig, engine: Engine, inputs: list[str | Path], stage: str = "embed_sscd"
) -> dict:
    """Embed IMAGE_RECORD or ENCODED_IMAGE shards (local paths or URIs) into ``<run>/<stage>/``
    with ``cfg.embed``."""
    if not inputs:
        raise FileNotFoundError("embed: no input shards")
    inputs = [storage.as_path(p) for p in inputs]  # local paths or URIs
    kinds = {input_kind(p) for p in inputs}
    if len(kinds) > 1:
        raise SchemaError(f"embed: inputs mix schemas {sorted(kinds)}; embed each kind separately")
    run = cfg.run_dir
    run.save_config(cfg)
    spec = embed_stage_spec(dataclasses.replace(cfg.embed, input=kinds.pop()))
    logger.info("embed %d shard(s) with %s", len(inputs), spec.config.model_id)
    return run_stage(spec, inputs, run.stage(stage), engine)
