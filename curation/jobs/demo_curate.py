"""The demo's curation after copy dedup: decontamination against the web's evaluation set, k-means,
retrieval against its seed set, LVD shards and the manifest, each scored against the synthetic
web's ground truth (which pool images are copies of evaluation images, which class each image is).

Before any ViT is pretrained the demo retrieves with the copy descriptor it trained (the SSCD
descriptor stays selectable as a retrieval embedder for exactly this case); the pretraining step
(:mod:`curation.jobs.demo_pretrain`) then re-embeds with its own teacher and compares.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.engines import Engine
from curation.jobs.cluster import run_cluster
from curation.jobs.config import CurationConfig
from curation.jobs.decode import pack_folder
from curation.jobs.embed import run_embed
from curation.jobs.manifest import write_manifest
from curation.jobs.retrieve import run_retrieve
from curation.jobs.shards import run_shards
from curation.stages.retrieve import RetrieveConfig, SeedDataset
from curation.synth import SynthWeb

logger = logging.getLogger(__name__)

SEED_SET = "seed"


def synthetic_keys(cfg: CurationConfig) -> dict[str, str]:
    """Downloaded key -> the synthetic web's key (the stem of the URL it was served at)."""
    table = pq.read_table(cfg.run_dir.stage("download").outputs(), columns=["key", "url"])
    return {k: Path(u).stem for k, u in zip(table["key"].to_pylist(), table["url"].to_pylist())}


def pool_classes(cfg: CurationConfig, web: SynthWeb) -> dict[str, int]:
    """Downloaded key -> ground-truth class, for the pool images that were downloaded."""
    truth = web.read("pool")
    classes = dict(zip(truth["key"].to_pylist(), truth["class_id"].to_pylist()))
    return {k: classes[s] for k, s in synthetic_keys(cfg).items() if s in classes}


def embed_eval_set(cfg: CurationConfig, engine: Engine, web: SynthWeb) -> dict[str, list]:
    """The web's evaluation set embedded with the run's descriptor (for decontamination)."""
    stage = "embed_eval_eval"
    inputs = pack_folder(cfg, web.eval_dir, into=f"{stage}_inputs")
    run_embed(cfg, engine, inputs, stage=stage)
    return {"eval": cfg.run_dir.stage(stage).outputs()}


def score_decontamination(cfg: CurationConfig, web: SynthWeb) -> dict:
    """How many downloaded copies of evaluation images the dedup removed, and what else it did."""
    truth = web.read("pool")
    copies = set(truth.filter(pc.equal(truth["kind"], "eval_copy"))["key"].to_pylist())
    synth = synthetic_keys(cfg)
    table = pq.read_table(cfg.run_dir.stage("dedup_copy").outputs(), columns=["key", "reason"])
    removed = {
        synth.get(k, k)
        for k, r in zip(table["key"].to_pylist(), table["reason"].to_pylist())
        if r == "eval_contaminated"
    }
    present = {synth.get(k, k) for k in table["key"].to_pylist()}
    planted = copies & present
    return {
        "eval_copies_in_pool": len(planted),
        "eval_copies_removed": len(planted & removed),
        "other_images_removed": len(removed - copies),
    }


def demo_retrieve_config(cfg: CurationConfig, web: SynthWeb) -> RetrieveConfig:
    """The seed set as is, plus ``sample`` and ``cluster`` retrieval around it."""
    demo = cfg.demo
    return RetrieveConfig(
        seeds=(
            SeedDataset(name=SEED_SET, mode="as_is", images=web.seed_dir),
            SeedDataset(name=SEED_SET, mode="sample", images=web.seed_dir, n=demo.sample_n),
            SeedDataset(
                name=SEED_SET,
                mode="cluster",
                images=web.seed_dir,
                m=demo.cluster_m,
                min_seeds=demo.cluster_min_seeds,
            ),
        ),
        pool="embed_sscd",
    )


def score_retrieval(cfg: CurationConfig, web: SynthWeb, stage: str = "retrieval") -> dict:
    """Per mode: precision (retrieved pool images of a seed class), the seed classes' base rate in
    the kept pool, and recall (the kept pool's seed-class images retrieved)."""
    classes = pool_classes(cfg, web)
    seed_classes = set(web.read("seed")["class_id"].to_pylist())
    kept = pq.read_table(cfg.run_dir.stage("deduplicated_images").outputs(), columns=["key"])
    pool = [k for k in kept["key"].to_pylist() if k in classes]
    relevant = {k for k in pool if classes[k] in seed_classes}
    selection = pq.read_table(cfg.run_dir.stage(stage).outputs())
    scores = {}
    for mode in ("sample", "cluster"):
        rows = selection.filter(pc.equal(selection["mode"], mode))
        keys = {k for k in rows["key"].to_pylist() if k in classes}
        hits = sum(classes[k] in seed_classes for k in keys)
        scores[mode] = {
            "retrieved": len(keys),
            "precision": round(hits / len(keys), 3) if keys else None,
            "base_rate": round(len(relevant) / len(pool), 3) if pool else None,
            "recall": round(hits / len(relevant), 3) if relevant else None,
        }
    return scores


def curation_config(cfg: CurationConfig, web: SynthWeb) -> CurationConfig:
    """``cfg`` with the demo's clusters and seed datasets, over the descriptor's embeddings."""
    return dataclasses.replace(
        cfg,
        cluster=dataclasses.replace(cfg.cluster, k=cfg.demo.clusters, pool="embed_sscd"),
        retrieve=demo_retrieve_config(cfg, web),
    )


def run_demo_curation(cfg: CurationConfig, engine: Engine, web: SynthWeb) -> dict:
    """k-means of the descriptor embeddings, retrieval against the seed set, shards, manifest
    (``cfg``: from :func:`curation_config`)."""
    stats = {"cluster": run_cluster(cfg, engine)}
    stats["retrieve"] = run_retrieve(cfg, engine)
    stats["retrieval_quality"] = score_retrieval(cfg, web)
    stats["shards"] = run_shards(cfg, engine)["shards"]
    manifest = write_manifest(cfg.run_dir.root)
    stats["manifest"] = {
        "path": str(cfg.run_dir.root / "manifest.json"),
        "num_samples": manifest["num_samples"],
        "shards": len(manifest["shards"]),
    }
    return stats
