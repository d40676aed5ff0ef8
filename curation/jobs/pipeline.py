"""The whole curation on a user's data (``lvd run PIPELINE.yaml``, ``jobs/curate_ray.py``):
download -> ingest (checks, exact and near-exact dedup) -> copy-detection embeddings -> copy dedup
and decontamination against the evaluation sets -> retrieval embeddings -> k-means (when a seed
dataset uses cluster mode) -> retrieval -> LVD shards -> manifest.

Every step resumes: a finished stage is skipped, an interrupted one redoes only what it had not
committed, so a killed run rerun with the same file ends with the same manifest as a run that was
never killed. The pipeline runs as far as its config allows and says where it stopped: without a
copy descriptor (``embed.checkpoint``, or ``pipeline.train_descriptor``) it stops after ingest,
without seed datasets (``retrieve.seeds``) after dedup.

Retrieval embeds with ``pipeline.retrieval_model`` / ``retrieval_checkpoint`` (a DINOv2 ViT: an
official checkpoint or a teacher exported by ``lvd pretrain``); left unset, it retrieves with the
copy descriptor's own embeddings, the only embedder a run has before any ViT is trained.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from curation import storage
from curation.config import ConfigError
from curation.engines import Engine
from curation.jobs.cluster import run_cluster
from curation.jobs.config import CurationConfig
from curation.jobs.curate import run_curation
from curation.jobs.decode import pack_folder
from curation.jobs.dedup import run_dedup
from curation.jobs.embed import run_embed
from curation.jobs.ingest import unique_image_shards
from curation.jobs.manifest import write_manifest
from curation.jobs.retrieve import run_retrieve
from curation.jobs.shards import run_shards

logger = logging.getLogger(__name__)

DESCRIPTOR = Path("descriptor") / "descriptor.pt"
SSCD_POOL = "embed_sscd"
RETRIEVAL_POOL = "embed_retrieval"


def descriptor_checkpoint(cfg: CurationConfig, engine: Engine) -> Path | None:
    """The copy descriptor's weights: ``embed.checkpoint``, or one trained on the pool now."""
    if cfg.embed.checkpoint is not None:
        return Path(cfg.embed.checkpoint)
    if not cfg.pipeline.train_descriptor:
        return None
    from curation.train_descriptor.data import shard_loaders
    from curation.train_descriptor.train import train_descriptor

    checkpoint = Path(cfg.run_dir.root) / DESCRIPTOR
    if not checkpoint.is_file():  # written whole at the end: present means finished
        loaders = [loader for _, loader in shard_loaders(unique_image_shards(cfg))]
        train_descriptor(cfg.demo.descriptor, loaders, checkpoint)
    return checkpoint


def descriptor_embed(cfg: CurationConfig, checkpoint: Path):
    """The embed settings of the copy descriptor (a TorchScript SSCD file or our own)."""
    model = cfg.embed.model if cfg.embed.checkpoint is not None else "descriptor"
    return dataclasses.replace(cfg.embed, model=model, checkpoint=checkpoint)


def embed_eval_sets(cfg: CurationConfig, engine: Engine) -> dict[str, list]:
    """Each evaluation set's EMBEDDING shards, made with ``cfg.embed`` where given as images."""
    found = {}
    for item in cfg.pipeline.eval_sets:
        if item.embeddings:
            shards = [
                p
                for p in storage.list_files(item.embeddings, "*.parquet")
                if not storage.as_path(p).name.startswith("_")
            ]
            if not shards:
                raise FileNotFoundError(
                    f"evaluation set {item.name}: no EMBEDDING shards in {item.embeddings}"
                )
            found[item.name] = shards
            continue
        stage = f"embed_eval_{item.name}"
        inputs = pack_folder(cfg, Path(item.images), into=f"{stage}_inputs")
        run_embed(cfg, engine, inputs, stage=stage)
        found[item.name] = cfg.run_dir.stage(stage).outputs()
    return found


def retrieval_settings(cfg: CurationConfig) -> CurationConfig:
    """``cfg`` with the retrieval embedder in ``embed`` and the pool stage it reads."""
    pipeline = cfg.pipeline
    if pipeline.retrieval_model is None:
        pool = SSCD_POOL
    else:
        pool = RETRIEVAL_POOL
        embed = dataclasses.replace(
            cfg.embed,
            model=pipeline.retrieval_model,
            checkpoint=pipeline.retrieval_checkpoint,
            size=pipeline.retrieval_size,
            resize=None,
            model_id=None,
            calibration=None,
        )
        cfg = dataclasses.replace(cfg, embed=embed)
    return dataclasses.replace(
        cfg,
        cluster=dataclasses.replace(cfg.cluster, pool=pool),
        retrieve=dataclasses.replace(cfg.retrieve, pool=pool),
    )


def curate_pool(cfg: CurationConfig, engine: Engine) -> dict:
    """After dedup: retrieval embeddings, k-means when cluster mode needs it, retrieval, shards,
    manifest. ``cfg``: from :func:`retrieval_settings`."""
    stats: dict = {}
    if cfg.retrieve.pool == RETRIEVAL_POOL:
        kept = cfg.run_dir.stage("deduplicated_images").outputs()
        stats[RETRIEVAL_POOL] = run_embed(cfg, engine, kept, stage=RETRIEVAL_POOL)
    if any(seed.mode == "cluster" for seed in cfg.retrieve.seeds):
        stats["clusters"] = run_cluster(cfg, engine)
    stats["retrieve"] = run_retrieve(cfg, engine)
    stats["shards"] = run_shards(cfg, engine)
    manifest = write_manifest(cfg.run_dir.root)
    stats["manifest"] = {
        "path": storage.join(cfg.run_dir.root, "manifest.json"),
        "num_samples": manifest["num_samples"],
        "shards": len(manifest["shards"]),
    }
    return stats


def run_pipeline(cfg: CurationConfig, engine: Engine) -> dict:
    """Run every step ``cfg`` allows (see the module docstring); returns each step's stats."""
    if cfg.download.url_list is None:
        raise ConfigError("download.url_list is required (a URL list file or folder)")
    # run_curation embeds when given a checkpoint; here the descriptor may be trained first.
    no_checkpoint = dataclasses.replace(cfg.embed, checkpoint=None)
    stats = run_curation(dataclasses.replace(cfg, embed=no_checkpoint), engine)
    checkpoint = descriptor_checkpoint(cfg, engine)
    if checkpoint is None:
        logger.info(
            "stopping after ingest: no copy descriptor (set embed.checkpoint, or "
            "pipeline.train_descriptor=true)"
        )
        stats["stopped_after"] = "ingest"
        return stats
    cfg = dataclasses.replace(cfg, embed=descriptor_embed(cfg, checkpoint))
    stats[SSCD_POOL] = run_embed(cfg, engine, unique_image_shards(cfg), stage=SSCD_POOL)
    stats["dedup"] = run_dedup(cfg, engine, eval_sets=embed_eval_sets(cfg, engine))
    if not cfg.retrieve.seeds:
        logger.info("stopping after dedup: no seed datasets (retrieve.seeds)")
        stats["stopped_after"] = "dedup"
        return stats
    stats.update(curate_pool(retrieval_settings(cfg), engine))
    return stats
