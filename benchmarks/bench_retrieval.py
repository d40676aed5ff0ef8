"""Retrieval precision and recall on the synthetic web, per embedder and mode (issue 15).

A synthetic web whose seed set is drawn from ``--seed-classes`` of its ``--classes`` classes is
ingested once; then, for each embedder, the kept pool and the seed images are embedded, clustered
(``lvd cluster``) and retrieved (``sample``: N nearest per seed image; ``cluster``: M per cluster
holding >= ``--min-seeds`` seed images). For each mode it prints:

* precision: the share of the retrieved pool images whose class is a seed class;
* base rate: the share of the pool in seed classes (what random selection would reach);
* recall: the share of the pool's seed-class images that were retrieved.

Embedders: ``vit-untrained`` (our DINOv2 ViT-S/14 with random weights), ``resnet-untrained``
(SSCD ResNet-18 with random weights), ``descriptor`` (a copy descriptor trained by
``lvd train-descriptor``, e.g. the demo's: ``--descriptor PATH``), ``vit`` (a ViT checkpoint: ``--vit PATH`` and ``--vit-arch``).

Usage: ``python benchmarks/bench_retrieval.py --work /tmp/bench_retrieval [--descriptor PATH]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.engines import get_engine
from curation.jobs.cluster import run_cluster
from curation.jobs.config import CurationConfig
from curation.jobs.embed import run_embed
from curation.jobs.ingest import run_ingest
from curation.jobs.retrieve import run_retrieve
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.stages.cluster import ClusterConfig
from curation.stages.embed import EmbedConfig
from curation.stages.retrieve import RetrieveConfig, SeedDataset
from curation.synth import SynthConfig
from curation.synth.web import generate_synthetic_web


def embedders(ns: argparse.Namespace) -> dict[str, EmbedConfig]:
    found = {
        "vit-untrained": EmbedConfig(model="dinov2_vits14", size=112),
        "resnet-untrained": EmbedConfig(model="sscd_resnet18", size=96),
    }
    if ns.descriptor:
        found["descriptor"] = EmbedConfig(model="descriptor", checkpoint=Path(ns.descriptor))
    if ns.vit:
        found["vit"] = EmbedConfig(model=ns.vit_arch, checkpoint=Path(ns.vit), size=ns.vit_size)
    return {k: v for k, v in found.items() if not ns.only or k in ns.only}


def score(selection, mode: str, classes: dict, seed_classes: set, pool: list[str]) -> dict:
    keys = set(selection.filter(pc.equal(selection.column("mode"), mode)).column("key").to_pylist())
    relevant = {k for k in pool if classes[k] in seed_classes}
    hits = sum(classes[k] in seed_classes for k in keys)
    return {
        "retrieved": len(keys),
        "precision": round(hits / max(len(keys), 1), 3),
        "base_rate": round(len(relevant) / len(pool), 3),
        "recall": round(hits / max(len(relevant), 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--pool", type=int, default=1000, help="pool originals")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed-classes", type=int, default=3)
    parser.add_argument("--seed-per-class", type=int, default=30)
    parser.add_argument("--n", type=int, default=4, help="sample mode: pool images per seed")
    parser.add_argument("--m", type=int, default=40, help="cluster mode: pool images per cluster")
    parser.add_argument("--k", type=int, default=50, help="k-means clusters")
    parser.add_argument("--min-seeds", type=int, default=4)
    parser.add_argument("--descriptor", help="a trained descriptor checkpoint")
    parser.add_argument("--vit", help="a ViT checkpoint (official or our teacher export)")
    parser.add_argument("--vit-arch", default="dinov2_vits14")
    parser.add_argument("--vit-size", type=int, default=112)
    parser.add_argument("--only", nargs="*", help="embedders to run")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()

    synth = SynthConfig(
        seed=11,
        n_pool=ns.pool,
        n_classes=ns.classes,
        n_near_duplicates=0,
        n_exact_duplicates=0,
        n_seed_classes=ns.seed_classes,
        n_seed_per_class=ns.seed_per_class,
        n_eval=0,
        n_eval_copies_in_pool=0,
    )
    web = generate_synthetic_web(ns.work / "web", synth, progress=False)
    truth = pq.read_table(web.root / "ground_truth" / "pool.parquet").to_pylist()
    classes = {row["key"]: row["class_id"] for row in truth}
    seed_truth = pq.read_table(web.root / "ground_truth" / "seed.parquet")
    seed_classes = set(seed_truth.column("class_id").to_pylist())
    shards = write_encoded_shards(
        list_image_files(web.pool_dir), ns.work / "in", rows_per_shard=256
    )
    engine = get_engine("local", progress=False)
    base = CurationConfig(name="ingest", runs_dir=ns.work / "runs")
    run_ingest(base, engine, shards)
    records = base.run_dir.stage("unique_images").outputs()
    pool = pq.read_table(records, columns=["key"]).column("key").to_pylist()

    results = {}
    for name, embed in embedders(ns).items():
        seeds = RetrieveConfig(
            seeds=(
                SeedDataset(name="seed", mode="sample", images=web.root / "images/seed", n=ns.n),
                SeedDataset(
                    name="seed",
                    mode="cluster",
                    images=web.root / "images/seed",
                    m=ns.m,
                    min_seeds=ns.min_seeds,
                ),
            )
        )
        cfg = dataclasses.replace(
            base, name=name, embed=embed, retrieve=seeds, cluster=ClusterConfig(k=ns.k)
        )
        start = time.perf_counter()
        run_embed(cfg, engine, records, stage="embed_retrieval")
        kept = cfg.run_dir.stage("unique_images")
        if not kept.path.exists():  # retrieval reads the kept set from its own run
            kept.path.parent.mkdir(parents=True, exist_ok=True)
            kept.path.symlink_to(base.run_dir.stage("unique_images").path)
        run_cluster(cfg, engine)
        run_retrieve(cfg, engine)
        selection = pq.read_table(cfg.run_dir.stage("retrieval").outputs())
        results[name] = {
            mode: score(selection, mode, classes, seed_classes, pool)
            for mode in ("sample", "cluster")
        }
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
    if ns.json:
        print(json.dumps(results, indent=2))
        return
    print(f"pool {len(pool)} images, {ns.classes} classes, seed classes {sorted(seed_classes)}")
    print(f"{'embedder':18} {'mode':8} {'retrieved':>9} {'precision':>9} {'base':>6} {'recall':>7}")
    for name, modes in results.items():
        for mode in ("sample", "cluster"):
            r = modes[mode]
            print(
                f"{name:18} {mode:8} {r['retrieved']:9d} {r['precision']:9.3f} "
                f"{r['base_rate']:6.3f} {r['recall']:7.3f}"
            )


if __name__ == "__main__":
    main()
