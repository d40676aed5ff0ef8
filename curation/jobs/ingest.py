"""The ingest job: a chain of stages, each writing its own folder of the run.

``ingest/`` (IngestStage: decode checks, filters; every image with its status) -> ``nsfw/`` (if
``ingest.nsfw.enabled``: scores, and ``status = nsfw`` for the flagged) -> ``faces/`` (if
``ingest.face_blur.enabled``: faces blurred, boxes and counts per row) -> ``dedup_exact/`` (sha256)
-> ``phash/`` (perceptual hashes) -> ``dedup_near/`` (Hamming distance) -> ``unique_images/`` (the
``ok`` records nobody marked as a duplicate: what the embedding stages read). Each stage after a
safety stage reads that stage's records, so rows it flagged are never hashed, deduplicated or
embedded.

The safety record (which filters ran, their model ids and thresholds, how many images each removed
or changed) is ``stats["safety"]``, also written to ``<run>/_safety.json`` for the manifest.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.engines import Engine
from curation.io import write_json_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.download import encoded_image_shards
from curation.runner import TABLE_OUTPUT, run_stage, run_table_stage
from curation.stages.base import StageSpec
from curation.stages.exact_dedup import exact_duplicates, read_ok_hashes
from curation.stages.faces import FacesStage, FacesStageConfig
from curation.stages.ingest import IngestStage, IngestStageConfig
from curation.stages.near_dedup import near_dedup_component_stats, near_duplicates, read_hashes
from curation.stages.nsfw import STATUS_NSFW, NsfwStage, nsfw_record
from curation.stages.phash import PhashConfig, PhashStage
from curation.stages.unique_images import UniqueImagesConfig, UniqueImagesStage
from schemas import HASH_DEDUP_SCHEMA

BLURRED = "_blurred"  # under faces/: metadata names start with "_", so the folder reads as data
SAFETY_RECORD = "_safety.json"  # in the run folder: the safety filters that ran and what they did


def dedup_summary(result: pa.Table) -> dict:
    """Rows in and kept, and how many rows each reason covers, of a HASH_DEDUP or DEDUP_COMPONENT
    table (both hold ``keep`` and ``reason`` per image)."""
    counts = pc.value_counts(result.column("reason")).to_pylist()
    return {
        "rows_in": result.num_rows,
        "rows_out": int(pc.sum(result.column("keep")).as_py() or 0),
        **{f"reason_{c['values']}": c["counts"] for c in counts},
    }


def face_counts(record_shards: list[Path]) -> dict:
    """Images looked at, images blurred and faces found, from FACE_RECORD shards."""
    looked = images = faces = 0
    for shard in record_shards:
        counts = pq.read_table(shard, columns=["face_count"]).column("face_count").drop_null()
        looked += len(counts)
        images += int(pc.sum(pc.greater(counts, 0)).as_py() or 0)
        faces += int(pc.sum(counts).as_py() or 0)
    return {"face_blur_checked": looked, "face_blur_images": images, "face_blur_faces": faces}


def run_safety(cfg: CurationConfig, engine: Engine, records: list[Path]) -> tuple[list, dict]:
    """The enabled safety stages over ``records``; returns the records later stages read, and the
    stats (with ``safety``: one entry per filter that ran)."""
    run, settings = cfg.run_dir, cfg.ingest
    stats: dict = {}
    safety: list[dict] = []
    if settings.nsfw.enabled:
        nsfw = run.stage("nsfw")
        stats["nsfw"] = run_stage(StageSpec(NsfwStage, settings.nsfw), records, nsfw, engine)
        records = nsfw.outputs()
        safety.append(
            {
                **nsfw_record(settings.nsfw),
                "checked": stats["nsfw"].get("rows_in", 0),
                "removed": stats["nsfw"].get(f"status_{STATUS_NSFW}", 0),
            }
        )
    if settings.face_blur.enabled:
        faces = run.stage("faces")
        blur = settings.face_blur
        config = FacesStageConfig(
            face_blur=blur,
            blurred_dir=str((faces.path / BLURRED).resolve()),
            max_pixels=settings.max_pixels,
            batch_size=settings.batch_size,
        )
        stats["faces"] = run_stage(StageSpec(FacesStage, config), records, faces, engine)
        records = faces.outputs()
        counts = face_counts(records)
        stats["faces"].update(counts)
        faces.write_stats(stats["faces"])
        safety.append(
            {
                "filter": "face_blur",
                "model_id": blur.detector,
                "settings": {
                    **blur.detector_options(),
                    "margin": blur.margin,
                    "cells": blur.cells,
                    "blur_radius": blur.blur_radius,
                },
                "checked": counts["face_blur_checked"],
                "changed": counts["face_blur_images"],
                "faces": counts["face_blur_faces"],
            }
        )
    stats["safety"] = safety
    return records, stats


def run_ingest(cfg: CurationConfig, engine: Engine, inputs: list[Path] | None = None) -> dict:
    """Ingest a run's downloaded shards (or ``inputs``, ENCODED_IMAGE parts), then dedup them.

    Writes ``<run>/ingest/``, the enabled safety stages' ``nsfw/`` and ``faces/``, ``dedup_exact/``,
    ``phash/``, ``dedup_near/`` and ``unique_images/``; returns each stage's stats, and ``safety``.
    """
    run = cfg.run_dir
    settings = cfg.ingest
    inputs = encoded_image_shards(cfg) if inputs is None else inputs
    if not inputs:
        raise FileNotFoundError(f"no downloaded shards under {run.root}; run `lvd download` first")
    run.save_config(cfg)
    stage = run.stage("ingest")
    spec = StageSpec(IngestStage, IngestStageConfig(settings))
    ingest_stats = dict(run_stage(spec, inputs, stage, engine))
    records = stage.outputs()
    seconds = ingest_stats.get("seconds") or 0
    ingest_stats["images_per_second"] = (
        round(ingest_stats.get("status_ok", 0) / seconds, 2) if seconds else None
    )
    stage.write_stats(ingest_stats)
    records, stats = run_safety(cfg, engine, records)
    write_json_atomic(cfg.run_dir.root / SAFETY_RECORD, {"filters": stats["safety"]})
    stats["ingest"] = ingest_stats

    dedup_outputs = []
    if settings.exact_dedup:
        exact = run.stage("dedup_exact")
        stats["dedup_exact"] = run_table_stage(
            "exact_dedup",
            lambda: exact_duplicates(read_ok_hashes(records)),
            HASH_DEDUP_SCHEMA,
            exact,
            summarize=dedup_summary,
        )
        dedup_outputs.append(exact.path / TABLE_OUTPUT)
    if settings.near_dedup.enabled:
        phash = StageSpec(PhashStage, PhashConfig(max_pixels=settings.max_pixels))
        stats["phash"] = run_stage(phash, records, run.stage("phash"), engine)
        hashes = run.stage("phash").outputs()
        near = settings.near_dedup
        excluded = dedup_outputs[0] if dedup_outputs else None
        stats["dedup_near"] = run_table_stage(
            "near_dedup",
            lambda: near_duplicates(
                read_hashes(hashes, excluded),
                near.max_distance,
                guard=near.guard,
                flat_index_limit=near.flat_index_limit,
            ),
            HASH_DEDUP_SCHEMA,
            run.stage("dedup_near"),
            config=near,
            summarize=lambda table: {
                **dedup_summary(table),
                "max_distance": near.max_distance,
                "guard": near.guard,
                "groups": near_dedup_component_stats(table),
            },
        )
        dedup_outputs.append(run.stage("dedup_near").path / TABLE_OUTPUT)
    unique = StageSpec(UniqueImagesStage, UniqueImagesConfig(tuple(map(str, dedup_outputs))))
    stats["unique_images"] = run_stage(unique, records, run.stage("unique_images"), engine)
    return stats


def unique_image_shards(cfg: CurationConfig) -> list[Path]:
    """IMAGE_RECORD shards of the ``ok``, deduplicated images: what embedding stages read."""
    return cfg.run_dir.stage("unique_images").outputs()
