"""The demo's last leg: pretrain a small DINOv2 ViT on the shards the demo wrote, export its
teacher, re-embed the pool and the seed set with it and retrieve again, and score its frozen
features by weighted k-NN on the synthetic web's classes, each against the same network untrained.

The recipe is DINOv2's (DINO + iBOT + KoLeo, multi-crop, masking, EMA teacher) on a CPU budget:
a 4-block ViT of ViT-Ti's width with 8-pixel patches, 64-pixel global and 32-pixel local crops,
small heads. k-NN: the
pool's originals (by ground-truth class) as the train split, the evaluation set as val.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from curation.engines import Engine
from curation.jobs.config import CurationConfig
from curation.jobs.demo_curate import score_retrieval
from curation.jobs.embed import run_embed
from curation.jobs.retrieve import run_retrieve
from curation.stages.embed import EmbedConfig
from curation.synth import SynthWeb

logger = logging.getLogger(__name__)

TEACHER = "teacher_backbone.pth"
UNTRAINED = "untrained_backbone.pth"
ARCH = "vit"  # the generic ViT: width and depth come from the exported checkpoint


def pretrain_config(cfg: CurationConfig):
    """The demo's PretrainConfig: DINOv2's recipe scaled to a CPU and a few minutes."""
    from pretrain.layers.dino_head import DINOHeadConfig
    from pretrain.train.config import (
        BackboneConfig,
        CropConfig,
        LossConfig,
        OptimConfig,
        PretrainConfig,
    )

    demo = cfg.demo
    iterations = demo.pretrain_iterations
    head = DINOHeadConfig(out_dim=demo.pretrain_prototypes, hidden_dim=512, bottleneck_dim=128)
    return PretrainConfig(
        backbone=BackboneConfig(
            arch="vit",
            patch_size=8,
            embed_dim=demo.pretrain_width,
            depth=demo.pretrain_depth,
            num_heads=max(1, demo.pretrain_width // 64),
            drop_path_rate=0.0,
        ),
        loss=LossConfig(dino_head=head),
        optim=OptimConfig(
            epochs=1,
            iterations_per_epoch=iterations,
            base_lr=demo.pretrain_lr,
            warmup_epochs=0.1,
            warmup_teacher_temp_epochs=0.3,
            freeze_last_layer_epochs=0.05,
        ),
        crops=CropConfig(global_crops_size=64, local_crops_size=32, local_crops_number=4),
        batch_size_per_rank=demo.pretrain_batch_size,
        num_workers=demo.pretrain_workers,
        checkpoint_every=max(1, iterations // 2),
        keep_checkpoints=1,
    )


def pretrain_on_shards(cfg: CurationConfig) -> tuple[dict, Path, Path]:
    """Train (or resume) on ``<run>/shards``; export the teacher backbone and the same network
    untrained; (stats, teacher path, untrained path)."""
    import torch

    from pretrain.train.checkpoint import export_teacher_backbone, latest_checkpoint
    from pretrain.train.loop import train
    from pretrain.train.meta_arch import SSLMetaArch

    config = pretrain_config(cfg)
    out = cfg.run_dir.root / "pretrain"
    result = train(config, str(cfg.run_dir.root / "shards"), out)
    teacher = out / TEACHER
    checkpoint = latest_checkpoint(out / "checkpoints")
    if checkpoint is None:
        raise RuntimeError(f"pretraining left no checkpoint in {out}")
    export_teacher_backbone(Path(checkpoint), SSLMetaArch(config), teacher)
    untrained = out / UNTRAINED
    if not untrained.is_file():  # the same network as built before its first step
        torch.manual_seed(config.seed)
        backbone = SSLMetaArch(config).teacher.backbone.state_dict()
        torch.save({k: v.detach().clone() for k, v in backbone.items()}, untrained)
    losses = result.losses
    stats = {
        "iterations": result.iterations,
        "first_loss": round(losses[0], 3) if losses else None,
        "last_loss": round(losses[-1], 3) if losses else None,
        "teacher": str(teacher),
    }
    return stats, teacher, untrained


def teacher_embed_config(cfg: CurationConfig, backbone: Path) -> EmbedConfig:
    """Embedding settings of an exported backbone (the teacher, or the network untrained)."""
    return dataclasses.replace(
        cfg.embed,
        model=ARCH,
        checkpoint=backbone,
        size=64,
        resize="square",
        model_id=None,
        calibration=None,
    )


def retrieve_with(cfg: CurationConfig, engine: Engine, web: SynthWeb, label: str, embed) -> dict:
    """Sample-mode retrieval again with another embedder: the kept pool and the seed set embedded
    into ``embed_retrieval_<label>/`` and ``embed_seed_seed_<label>/``, the selection into
    ``<label>_retrieval/``; scored like the first."""
    cfg = dataclasses.replace(cfg, embed=embed)
    pool = f"embed_retrieval_{label}"
    run_embed(cfg, engine, cfg.run_dir.stage("deduplicated_images").outputs(), stage=pool)
    seeds = tuple(
        dataclasses.replace(s, name=f"{s.name}_{label}")
        for s in cfg.retrieve.seeds
        if s.mode == "sample"
    )
    cfg = dataclasses.replace(
        cfg, retrieve=dataclasses.replace(cfg.retrieve, seeds=seeds, pool=pool)
    )
    run_retrieve(cfg, engine, prefix=f"{label}_")
    return score_retrieval(cfg, web, stage=f"{label}_retrieval")["sample"]


def knn_accuracy(web: SynthWeb, backbone: Path) -> dict:
    """Weighted k-NN (k = 20, T = 0.07) of the ViT's frozen features on the web's classes."""
    from curation.models.embedder import load_embedder
    from curation.models.inference import BatchEmbedder, InferenceOptions
    from pretrain.eval.frozen_features import evaluate_splits
    from pretrain.eval.labelled import LabelledSplit

    def split(table, folder: Path) -> LabelledSplit:
        rows = [r for r in table.to_pylist() if r.get("kind", "original") == "original"]
        files = [folder / Path(r["file"]).name for r in rows]
        return LabelledSplit(
            keys=[r["key"] for r in rows],
            labels=[f"class_{r['class_id']:02d}" for r in rows],
            loaders=[f.read_bytes for f in files],
        )

    train, val = split(web.read("pool"), web.pool_dir), split(web.read("eval"), web.eval_dir)
    embedder = load_embedder(ARCH, backbone, size=64, resize="square")
    batch = BatchEmbedder(embedder, InferenceOptions(device="cpu", batch_size=64, num_workers=0))
    try:
        report = evaluate_splits(train, val, batch)
    finally:
        batch.close()
    return {
        "knn_top1": round(report["knn_top1"], 4),
        "knn_top5": round(report["knn_top5"], 4),
        "train_images": report["train_images"],
        "val_images": report["val_images"],
    }


def run_demo_pretraining(cfg: CurationConfig, engine: Engine, web: SynthWeb) -> dict:
    """Pretrain on the shards; retrieval and k-NN with its teacher and with the untrained ViT."""
    stats, teacher, untrained = pretrain_on_shards(cfg)
    result = {"pretrain": stats}
    result["retrieval_teacher"] = retrieve_with(
        cfg, engine, web, "teacher", teacher_embed_config(cfg, teacher)
    )
    result["retrieval_untrained_vit"] = retrieve_with(
        cfg, engine, web, "untrained", teacher_embed_config(cfg, untrained)
    )
    result["knn_teacher"] = knn_accuracy(web, teacher)
    result["knn_untrained_vit"] = knn_accuracy(web, untrained)
    return result
