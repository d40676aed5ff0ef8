"""Per-iteration schedules of DINOv2 (Oquab et al., 2023), precomputed as arrays indexed by
iteration, as the official trainer does: learning rate (linear warmup from 0, cosine to the
minimum, scaled by sqrt(total batch / 1024)), weight decay (cosine up), teacher momentum
(cosine to 1), teacher temperature (linear warmup, then constant), and the last layer's
learning rate (0 while the heads' last layer is frozen, then the learning rate)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pretrain.train.config import OptimConfig


def cosine_schedule(
    base_value: float,
    final_value: float,
    total_iters: int,
    warmup_iters: int = 0,
    start_warmup_value: float = 0.0,
    freeze_iters: int = 0,
) -> np.ndarray:
    """``freeze_iters`` zeros, a linear warmup from ``start_warmup_value`` to ``base_value``
    over ``warmup_iters``, then a half cosine from ``base_value`` to ``final_value``."""
    freeze = np.zeros(min(freeze_iters, total_iters))
    warmup = np.linspace(start_warmup_value, base_value, max(warmup_iters, 0), endpoint=False)
    n_cosine = max(total_iters - len(freeze) - len(warmup), 0)
    steps = np.arange(n_cosine)
    cosine = final_value + 0.5 * (base_value - final_value) * (
        1 + np.cos(np.pi * steps / max(n_cosine, 1))
    )
    return np.concatenate((freeze, warmup, cosine))[:total_iters]


def scaled_lr(base_lr: float, total_batch_size: int, reference: float = 1024.0) -> float:
    """The square-root batch-size rule of DINOv2: ``base_lr * sqrt(batch / 1024)``."""
    return base_lr * math.sqrt(total_batch_size / reference)


def lr_schedule_with_frozen_start(lr: np.ndarray, freeze_iters: int) -> np.ndarray:
    """The official last-layer schedule: the lr schedule with its first iterations zeroed."""
    frozen = lr.copy()
    frozen[:freeze_iters] = 0.0
    return frozen


@dataclass(frozen=True)
class Schedules:
    lr: np.ndarray
    last_layer_lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    def at(self, iteration: int) -> dict[str, float]:
        """Every schedule's value at ``iteration`` (the last value past the end)."""
        index = min(iteration, len(self.lr) - 1)
        return {
            "lr": float(self.lr[index]),
            "last_layer_lr": float(self.last_layer_lr[index]),
            "weight_decay": float(self.weight_decay[index]),
            "momentum": float(self.momentum[index]),
            "teacher_temp": float(self.teacher_temp[index]),
        }


def build_schedules(cfg: OptimConfig, total_batch_size: int) -> Schedules:
    per_epoch = cfg.iterations_per_epoch
    total = cfg.total_iterations
    lr = scaled_lr(cfg.base_lr, total_batch_size, cfg.lr_scaling_reference)
    warmup = int(cfg.warmup_epochs * per_epoch)
    lr_values = cosine_schedule(lr, cfg.min_lr, total, warmup)
    return Schedules(
        lr=lr_values,
        last_layer_lr=lr_schedule_with_frozen_start(
            lr_values, int(cfg.freeze_last_layer_epochs * per_epoch)
        ),
        weight_decay=cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total),
        momentum=cosine_schedule(cfg.momentum_teacher, cfg.final_momentum_teacher, total),
        teacher_temp=cosine_schedule(
            cfg.teacher_temp,
            cfg.teacher_temp,
            total,
            int(cfg.warmup_teacher_temp_epochs * per_epoch),
            cfg.warmup_teacher_temp,
        ),
    )
