"""Score a descriptor on a synthetic web (micro-AP of the planted copy pairs in its pool), and
calibrate its copy threshold there for a target precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.eval.copy_detection import (
    CopyDetectionReport,
    evaluate_copy_detection,
    knn_pairs,
    synthetic_copy_pairs,
)
from curation.index.calibration import ScoreCalibration, fit_calibration
from curation.models.embedder import load_embedder
from curation.models.inference import BatchEmbedder, InferenceOptions
from curation.stages.near_dedup import NearDedupConfig, near_duplicates
from curation.stages.phash import phash_bytes
from curation.synth import SynthWeb
from curation.train_descriptor.data import folder_loaders


def embed_folder(
    checkpoint: Path,
    folder: Path,
    *,
    size: int | None = None,
    scales: tuple[int, ...] = (),
    device: str = "auto",
    num_workers: int = 2,
) -> tuple[list[str], np.ndarray]:
    """The file stems under ``folder`` and their descriptors (rows in the same order)."""
    embedder = load_embedder("descriptor", checkpoint, size=size, scales=scales)
    loaders = folder_loaders(Path(folder))
    runner = BatchEmbedder(embedder, InferenceOptions(device=device, num_workers=num_workers))
    try:
        result = runner.embed([loader for _, loader in loaders])
    finally:
        runner.close()
    return [loaders[i][0] for i in result.positions], result.embeddings


def _web(web: SynthWeb | Path) -> SynthWeb:
    return web if isinstance(web, SynthWeb) else SynthWeb.load(Path(web))


def evaluate_on_synthetic_web(
    checkpoint: Path,
    web: SynthWeb | Path,
    *,
    size: int | None = None,
    scales: tuple[int, ...] = (),
    k: int = 10,
    device: str = "auto",
    num_workers: int = 2,
) -> CopyDetectionReport:
    """Embed every pool image of ``web`` with the descriptor at ``checkpoint`` and score the
    nearest-neighbour pairs against the ground-truth copies (:mod:`curation.eval.copy_detection`)."""
    web = _web(web)
    keys, matrix = embed_folder(
        checkpoint, web.pool_dir, size=size, scales=scales, device=device, num_workers=num_workers
    )
    return evaluate_copy_detection(keys, matrix, synthetic_copy_pairs(web.read("pool")), k=k)


def after_ingest_dedup(web: SynthWeb, near_dedup: NearDedupConfig) -> set[str]:
    """Keys of ``web``'s pool that survive exact (sha256) and near-exact (pHash) dedup."""
    pool = web.read("pool").sort_by("key")
    first: dict[str, str] = {}
    for key, digest in zip(pool.column("key").to_pylist(), pool.column("sha256").to_pylist()):
        first.setdefault(digest, key)
    keys = sorted(first.values())
    if not near_dedup.enabled:
        return set(keys)
    files = dict(zip(pool.column("key").to_pylist(), pool.column("file").to_pylist()))
    hashes = [phash_bytes((web.root / files[key]).read_bytes()) for key in keys]
    table = pa.table({"key": keys, "phash": pa.array(hashes, pa.int64())})
    result = near_duplicates(table, near_dedup.max_distance, guard=near_dedup.guard)
    return {k for k, keep in zip(result["key"].to_pylist(), result["keep"].to_pylist()) if keep}


def calibrate_on_synthetic_web(
    checkpoint: Path,
    web: SynthWeb | Path,
    target_precision: float,
    *,
    k: int = 10,
    near_dedup: NearDedupConfig | None = None,
    device: str = "auto",
    num_workers: int = 2,
    pool_scale: float = 1.0,
) -> tuple[ScoreCalibration, dict]:
    """The score kind and copy threshold reaching ``target_precision`` on ``web``'s planted copies
    (the web must not be the one the threshold will be used on), with each kind's figures.

    ``near_dedup``: first drop what the ingest job's exact and near-exact dedup would (same
    settings), so the threshold is chosen on the copies that reach copy dedup, not on the easy
    ones the pHash stage removes (those would lower the threshold and the precision it gives).
    ``pool_scale``: the pool the threshold is for, in multiples of ``web``'s pool (see
    :func:`curation.index.calibration.threshold_for_precision`)."""
    web = _web(web)
    keys, matrix = embed_folder(checkpoint, web.pool_dir, device=device, num_workers=num_workers)
    if near_dedup is not None:  # calibrate on what copy dedup will see: the ingest's survivors
        survivors = after_ingest_dedup(web, near_dedup)
        rows = [r for r, key in enumerate(keys) if key in survivors]
        keys, matrix = [keys[r] for r in rows], matrix[rows]
    present = set(keys)
    true = {p for p in synthetic_copy_pairs(web.read("pool")) if set(p) <= present}
    i, j, sim = knn_pairs(matrix, k)
    labels = np.fromiter(
        (tuple(sorted((keys[a], keys[b]))) in true for a, b in zip(i, j)), bool, len(i)
    )
    return fit_calibration(
        matrix,
        i,
        j,
        sim,
        labels,
        len(true),
        target_precision,
        measured_on=f"synthetic web {Path(web.root).name}",
        pool_scale=pool_scale,
    )
