"""High-resolution adaptation: the last iterations of a run at larger crops (DINOv2, Oquab
et al., 2023, "Adapting the resolution": 518 x 518 for the last 10k iterations), so the
model learns the finer patch grids that dense tasks feed it.

``high_res.iterations = N`` makes the last N of ``optim.total_iterations`` the phase: from
iteration ``total - N`` the global crops are ``high_res.global_crops_size`` (and the local
crops ``high_res.local_crops_size`` when given). Nothing else changes: the models keep their
parameters and shapes, because the ViT interpolates its position embeddings to the patch
grid of each input at run time (bicubic, from the grid it was built with;
``DinoVisionTransformer.interpolate_pos_encoding``), and the masks follow the larger grid.

Schedules continue: the phase runs on the tail of the run's own precomputed schedules, with
the same AdamW state, rather than a restarted or constant learning rate. Why: the tail of
the cosine is a small and decaying learning rate with the teacher momentum close to 1,
which is what a short adaptation after the main training wants (a restarted warmup would
shake the features learnt at low resolution, which the phase should refine, not relearn);
AdamW's moments stay valid because no parameter changes shape; and a run killed inside the
phase resumes by indexing the same arrays, so it repeats an uninterrupted run exactly.
(The official release trained the phase as a separate short run whose schedules were
compressed into it; in one continuous run the tail plays that part.) Choose N and
``optim.min_lr`` so the tail's learning rate is what you want.

:class:`PhasedBatches` gives the loop each iteration's batch and opens a new loader at the
phase start (the stream position carries over), so no batch prefetched at the old size is
ever trained on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

from pretrain.train.config import CropConfig, PretrainConfig

logger = logging.getLogger(__name__)


def phase_start(cfg: PretrainConfig) -> int:
    """The first iteration of the high-resolution phase (the total when there is none)."""
    return cfg.optim.total_iterations - cfg.high_res.iterations


def crops_at(cfg: PretrainConfig, iteration: int) -> CropConfig:
    """The crop settings of ``iteration``."""
    high_res = cfg.high_res
    if not high_res.iterations or iteration < phase_start(cfg):
        return cfg.crops
    return dataclasses.replace(
        cfg.crops,
        global_crops_size=high_res.global_crops_size,
        local_crops_size=high_res.local_crops_size or cfg.crops.local_crops_size,
    )


class PhasedBatches:
    """Batches by iteration: ``open_loader(crops, iteration)`` must return an iterator of
    the batches from ``iteration`` on, cropped per ``crops``; it is called again where the
    crops change."""

    def __init__(
        self,
        cfg: PretrainConfig,
        open_loader: Callable[[CropConfig, int], Iterator[dict[str, Any]]],
    ) -> None:
        self.cfg = cfg
        self.open_loader = open_loader
        self._crops: CropConfig | None = None
        self._batches: Iterator[dict[str, Any]] | None = None

    def next(self, iteration: int) -> dict[str, Any]:
        crops = crops_at(self.cfg, iteration)
        if crops != self._crops:
            if crops != self.cfg.crops:
                logger.info(
                    "high-resolution phase from iteration %d: global crops %d px, local %d px",
                    iteration,
                    crops.global_crops_size,
                    crops.local_crops_size,
                )
            self._batches = None  # let the old loader's workers go first
            self._batches = self.open_loader(crops, iteration)
            self._crops = crops
        return next(self._batches)
