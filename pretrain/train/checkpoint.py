"""Training checkpoints with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a folder ``iter_NNNNNNNN`` under ``<out>/checkpoints`` holding the model
(student, teacher, loss centers), the optimizer, the iteration, the loader position and
every rank's RNG state. It is written under ``tmp-iter_NNNNNNNN`` and renamed once every
rank has finished, so a crash during a save never leaves a folder that looks valid
(a leftover ``tmp-*`` is ignored and swept by the next save). Only the newest ``keep``
checkpoints are kept.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from pretrain import distributed

CHECKPOINT_PATTERN = re.compile(r"^iter_(\d{8})$")
TEMP_PREFIX = "tmp-"


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}"


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(folder: Path) -> Path | None:
    checkpoints = list_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def _rank() -> int:
    return dist.get_rank() if distributed.is_enabled() else 0


def _single_process() -> bool:
    return not distributed.is_enabled()


def _barrier() -> None:
    if distributed.is_enabled():
        dist.barrier()


def _state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": get_optimizer_state_dict(model, optimizer),
        "extra": extra,
        # Per-rank keys: DCP deduplicates equal keys across ranks, RNG states differ.
        "rng": {f"rank{_rank()}": torch.get_rng_state()},
    }


def save_checkpoint(
    folder: Path,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    keep: int,
) -> Path:
    """Save atomically; return the final folder. Collective: every rank must call it."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(iteration)
    temp = folder / (TEMP_PREFIX + final.name)
    if _rank() == 0 and temp.exists():
        shutil.rmtree(temp)
    _barrier()
    dcp.save(_state(model, optimizer, extra), checkpoint_id=str(temp), no_dist=_single_process())
    _barrier()
    if _rank() == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
        for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        for stale in folder.glob(TEMP_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG state in place; return ``extra``."""
    state = _state(model, optimizer, {"iteration": 0, "samples_seen": 0})
    dcp.load(state, checkpoint_id=str(path), no_dist=_single_process())
    model.load_state_dict(state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    torch.set_rng_state(state["rng"][f"rank{_rank()}"])
    return state["extra"]


def export_teacher_backbone(checkpoint: Path, model: torch.nn.Module, out: Path) -> Path:
    """Write the teacher backbone of a training checkpoint as a plain state dict in the
    official DINOv2 key layout (``cls_token``, ``blocks.N.*``, ``norm.*``; no heads), the
    form ``pretrain.models.load_backbone`` loads strictly. ``model``: an
    :class:`~pretrain.train.meta_arch.SSLMetaArch` built with the run's config."""
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(checkpoint), no_dist=_single_process())
    model.load_state_dict(state["model"])
    backbone = {k: v.detach().clone() for k, v in model.teacher.backbone.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(TEMP_PREFIX + out.name)
    torch.save(backbone, temp)
    os.replace(temp, out)
    return out
