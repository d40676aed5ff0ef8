"""Train a copy-detection descriptor with SSCD's self-supervised recipe (Pizzi et al., CVPR 2022).

Two strong augmentations of each unlabeled image; InfoNCE over the batch (temperature 0.05) plus
the differential-entropy regulariser, whose weight is ramped up from 0 (at full weight from the
first step it can stall InfoNCE on a small budget); optional mixup / cutmix with soft multi-positive
targets; AdamW (or SGD) with linear warmup and cosine decay. SSCD's LARS at batch 4096 is a
large-scale setting: not implemented here.

Runs on the GPU when present (bf16 autocast), else on the CPU, where ``autocast=auto`` times one
fp32 and one bf16 step and keeps the faster. ``time_budget_s`` sizes the schedule to the budget
after a few timed steps and stops when it is spent. The result is a checkpoint
(:func:`curation.models.descriptor.save_descriptor_checkpoint`) the embed stage loads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from curation.config import to_dict
from curation.models.descriptor import (
    build_descriptor,
    save_descriptor_checkpoint,
    warm_start,
)
from curation.models.inference import resolve_device
from curation.models.preprocess import Preprocessing, normalize_batch
from curation.models.sscd import RESNET_LAYOUTS
from curation.train_descriptor.augment import CopyAugment
from curation.train_descriptor.config import DescriptorTrainConfig
from curation.train_descriptor.data import EpochSampler, TwoViewDataset
from curation.train_descriptor.entropy_loss import DifferentialEntropyLoss
from curation.train_descriptor.infonce_loss import InfoNCELoss
from curation.train_descriptor.mixing import mix_batch

logger = logging.getLogger(__name__)

CALIBRATION_START, CALIBRATION_END = 4, 8  # steps timed before a budget sizes the schedule


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    seconds: float
    autocast: str
    history: list[dict[str, float]]


def lr_schedule(cfg: DescriptorTrainConfig, total_steps: int) -> np.ndarray:
    """Per-step learning rates: linear warmup, then cosine down to ``min_lr_fraction * lr``."""
    warmup = max(1, int(round(cfg.warmup_fraction * total_steps)))
    steps = np.arange(total_steps, dtype=np.float64)
    progress = np.clip((steps - warmup) / max(1, total_steps - warmup), 0.0, 1.0)
    low = cfg.lr * cfg.min_lr_fraction
    cosine = low + (cfg.lr - low) * 0.5 * (1.0 + np.cos(math.pi * progress))
    return np.where(steps < warmup, cfg.lr * (steps + 1) / warmup, cosine)


def entropy_schedule(cfg: DescriptorTrainConfig, total_steps: int) -> np.ndarray:
    ramp = max(1, int(round(cfg.entropy_ramp_fraction * total_steps)))
    return cfg.entropy_weight * np.clip(np.arange(total_steps) / ramp, 0.0, 1.0)


def _autocast(device: torch.device, mode: str):
    if mode == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def build_model(cfg: DescriptorTrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The descriptor network and the constructor keywords its checkpoint records."""
    arch_kwargs = dict(cfg.arch_kwargs)
    if cfg.arch in RESNET_LAYOUTS:
        arch_kwargs.setdefault("width", cfg.width)
    torch.manual_seed(cfg.seed)
    model = build_descriptor(cfg.arch, dim=cfg.dim, **arch_kwargs)
    if cfg.warm_start is not None:
        warm_start(model, cfg.arch, cfg.warm_start, **arch_kwargs)
    return model, arch_kwargs


def train_descriptor(
    cfg: DescriptorTrainConfig,
    loaders: list,
    out: Path,
    *,
    init_checkpoint: Path | None = None,
) -> TrainResult:
    """Train on the images behind ``loaders`` (callables returning bytes); save to ``out``.

    ``init_checkpoint``: also save the untrained network there (the same init), as a baseline.
    """
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        # Oversubscribed cores make every intra-op barrier wait for a time slice: on a small
        # machine a step can get 10x slower. Leave the loader processes their cores.
        threads = cfg.threads or max(1, (os.cpu_count() or 1) - cfg.num_workers)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        return _train(cfg, loaders, out, init_checkpoint, device)
    finally:
        if device.type == "cpu":
            torch.set_num_threads(previous_threads)


def _train(cfg, loaders, out, init_checkpoint, device) -> TrainResult:
    model, arch_kwargs = build_model(cfg)
    is_vit = hasattr(model, "patch_size")
    size = cfg.augment.size
    multiple = model.patch_size if is_vit else 1
    if size % multiple:
        raise ValueError(f"augment.size {size} must be a multiple of the patch size {multiple}")
    inference = cfg.inference_settings(multiple)
    meta = {"arch": cfg.arch, "dim": cfg.dim, "arch_kwargs": arch_kwargs, "inference": inference}
    if init_checkpoint is not None:
        save_descriptor_checkpoint(init_checkpoint, model, **meta, train={"steps": 0})
    model.to(device).train()
    channels_last = cfg.channels_last and not is_vit
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and norms
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    infonce = InfoNCELoss(cfg.temperature)
    entropy = DifferentialEntropyLoss()
    prep = Preprocessing(size=size, resize="square")
    dataset = TwoViewDataset(
        loaders, CopyAugment(cfg.augment), seed=cfg.seed, cache=cfg.cache_images
    )
    batches = iter(
        DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=EpochSampler(len(dataset), cfg.seed),
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            prefetch_factor=4 if cfg.num_workers > 0 else None,
            pin_memory=device.type == "cuda",
        )
    )
    rng = np.random.default_rng([cfg.seed, 1])
    total = cfg.max_steps
    lrs, weights = lr_schedule(cfg, total), entropy_schedule(cfg, total)
    autocast = cfg.autocast
    if autocast == "auto":
        autocast = "bf16" if device.type == "cuda" else "probe"
    probe_times: dict[str, float] = {}
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    step, mark, refit_at = 0, 0.0, -1
    # Time spent waiting for the next batch (augmentation not keeping up): in the log window
    # since the last record, and in all.
    waited = waited_in_all = 0.0
    window_start = start
    while step < total:
        mode = autocast
        if autocast == "probe":  # steps 0-1 warm both paths up, steps 2-3 are timed
            mode = ("fp32", "bf16")[step % 2]
        wait_start = time.perf_counter()
        views, index = next(batches)
        step_start = time.perf_counter()
        waited += step_start - wait_start
        waited_in_all += step_start - wait_start
        n = len(index)
        pixels = torch.cat([views[:, 0], views[:, 1]]).to(device, non_blocking=True)
        x = normalize_batch(pixels, prep, torch.float32, channels_last=channels_last)
        instance = torch.cat([index, index]).to(device)
        membership = (
            mix_batch(x, instance, cfg.mix_p, cfg.mix_alpha, rng) if cfg.mix_p > 0 else None
        )
        if membership is None:
            same = (instance[:, None] == instance[None, :]).float()
            overlap = same
        else:
            overlap = membership @ membership.T
        eye = torch.eye(2 * n, device=device, dtype=torch.bool)
        overlap = overlap.masked_fill(eye, 0.0)
        targets = overlap / overlap.sum(dim=1, keepdim=True).clamp(min=1e-12)
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[step])
        with _autocast(device, mode):
            embeddings = model(x)
        loss_infonce = infonce(embeddings, targets)
        loss_entropy = entropy(embeddings, overlap > 0)
        loss = loss_infonce + float(weights[step]) * loss_entropy
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if device.type == "cuda" and step % cfg.log_every == 0:
            torch.cuda.synchronize()
        if autocast == "probe" and step >= 3:
            probe_times[mode] = time.perf_counter() - step_start
            if step == 4:
                autocast = min(probe_times, key=probe_times.get)
                logger.info("cpu autocast: %s (step s: %s)", autocast, probe_times)
        elapsed = time.perf_counter() - start
        if step == CALIBRATION_START:
            mark = elapsed
        if cfg.time_budget_s and step in (CALIBRATION_END, refit_at):
            # Fit the schedule to the budget from the speed so far (after warm-up); once early,
            # once again a quarter in, when the loaders and caches have settled.
            per_step = (elapsed - mark) / (step - CALIBRATION_START)
            fitted = step + int((cfg.time_budget_s - elapsed) / per_step)
            refit_at = max(2 * CALIBRATION_END, fitted // 4) if step == CALIBRATION_END else -1
            total = max(step + 1, min(cfg.max_steps, fitted))
            lrs, weights = lr_schedule(cfg, total), entropy_schedule(cfg, total)
            logger.info(
                "time budget %.0fs: %d steps at %.2fs/step", cfg.time_budget_s, total, per_step
            )
        if step % cfg.log_every == 0 or step == total:
            record = {
                "step": step,
                "loss": float(loss.detach()),
                "infonce": float(loss_infonce.detach()),
                "entropy": float(loss_entropy.detach()),
                "lr": float(lrs[step - 1]),
                "seconds": round(elapsed, 2),
            }
            window = time.perf_counter() - window_start
            record["data_wait_s"] = round(waited, 3)
            record["data_wait_fraction"] = round(min(1.0, waited / window), 4) if window else 0.0
            waited, window_start = 0.0, time.perf_counter()
            history.append(record)
            logger.info("step %d/%d %s", step, total, record)
        if cfg.time_budget_s and elapsed >= cfg.time_budget_s:
            logger.info("time budget spent after %d steps", step)
            break
    seconds = time.perf_counter() - start
    if autocast == "probe":  # stopped before the probe finished: report what ran last
        autocast = mode
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    train_meta = {"steps": step, "seconds": round(seconds, 1), "autocast": autocast}
    train_meta["data_wait_fraction"] = round(waited_in_all / seconds, 4) if seconds else 0.0
    train_meta["config"] = to_dict(replace(cfg, warm_start=None))
    train_meta["warm_start"] = str(cfg.warm_start) if cfg.warm_start else None
    save_descriptor_checkpoint(out, model, **meta, train=train_meta)
    logger.info("saved descriptor after %d steps (%.0fs) to %s", step, seconds, out)
    return TrainResult(Path(out), step, seconds, autocast, history)
