"""Score a descriptor on a synthetic web: micro-AP of the planted copy pairs in its pool."""

from __future__ import annotations

from pathlib import Path

from curation.eval.copy_detection import (
    CopyDetectionReport,
    evaluate_copy_detection,
    synthetic_copy_pairs,
)
from curation.models.embedder import load_embedder
from curation.models.inference import BatchEmbedder, InferenceOptions
from curation.synth import SynthWeb
from curation.train_descriptor.data import folder_loaders


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
    if not isinstance(web, SynthWeb):
        web = SynthWeb.load(Path(web))
    embedder = load_embedder("descriptor", checkpoint, size=size, scales=scales)
    loaders = folder_loaders(web.pool_dir)
    runner = BatchEmbedder(embedder, InferenceOptions(device=device, num_workers=num_workers))
    try:
        result = runner.embed([loader for _, loader in loaders])
    finally:
        runner.close()
    keys = [loaders[i][0] for i in result.positions]
    return evaluate_copy_detection(
        keys, result.embeddings, synthetic_copy_pairs(web.read("pool")), k=k
    )
