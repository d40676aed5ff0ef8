"""Training checkpoints with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a folder ``iter_NNNNNNNN`` under ``<out>/checkpoints`` holding the model
(student, teacher, loss centers), the optimizer, the iteration, the loader position and
every rank's RNG state. It is written under ``tmp-iter_NNNNNNNN`` and renamed once every
rank has finished, so a crash during a save never leaves a folder that looks valid
(a leftover ``tmp-*`` is ignored and swept by the next save). Only the newest ``keep``
checkpoints are kept.

Under FSDP each rank writes its own shards (``__<rank>_0.distcp``) and no rank ever holds
the full model; the metadata records the global shapes, so a checkpoint resumes with
another world size (each rank reads the slices its new shards cover, or whole tensors in
a single process). The loader position counts samples of the global stream, so it carries
over too; RNG states are per rank and only restored for ranks the checkpoint has.
:func:`consolidate_checkpoint` turns a checkpoint into one ``torch.save`` file offline,
and :func:`read_teacher_backbone` reads only the teacher backbone, in the official key
layout.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from pretrain import distributed

logger = logging.getLogger(__name__)

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


def _rng_state() -> dict[str, torch.Tensor]:
    # Per-rank keys: DCP deduplicates equal keys across ranks, RNG states differ.
    states = {f"rank{_rank()}": torch.get_rng_state()}
    if torch.cuda.is_available():
        states[f"cuda_rank{_rank()}"] = torch.cuda.get_rng_state()
    return states


def _state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
) -> dict[str, Any]:
    # Sharded (DTensor) entries under FSDP, plain tensors otherwise; keys are the same.
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state, "extra": extra, "rng": _rng_state()}


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


def stored_keys(path: Path) -> set[str]:
    """The flattened keys a checkpoint holds (``model.student.backbone.cls_token``, ...)."""
    return set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG state in place; return ``extra``.

    Works whatever world size saved the checkpoint. A rank the checkpoint has no RNG state
    for keeps its seeded RNG (stochastic depth then draws differently from an uninterrupted
    run with that world size, which does not exist)."""
    stored = stored_keys(path)
    extra = {"iteration": 0, "samples_seen": 0, "world_size": 1}
    state = _state(model, optimizer, {k: v for k, v in extra.items() if f"extra.{k}" in stored})
    state["rng"] = {k: v for k, v in state["rng"].items() if f"rng.{k}" in stored}
    dcp.load(state, checkpoint_id=str(path), no_dist=_single_process())
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )
    rng = state["rng"]
    if f"rank{_rank()}" in rng:
        torch.set_rng_state(rng[f"rank{_rank()}"])
    else:
        logger.info("%s has no RNG state for rank %d; its RNG stays as seeded", path, _rank())
    if f"cuda_rank{_rank()}" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng[f"cuda_rank{_rank()}"])
    return state["extra"]


# ---------------------------------------------------------------------- export, consolidation

TEACHER_BACKBONE_PREFIX = "model.teacher.backbone."


class CheckpointNotFoundError(FileNotFoundError):
    """A path that is not a training checkpoint nor a folder holding one."""


def resolve_checkpoint(path: Path) -> Path:
    """``path`` if it is a DCP checkpoint, else the newest ``iter_*`` in it or in its
    ``checkpoints`` folder (a run folder)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path} does not exist")
    if not path.is_dir():
        raise CheckpointNotFoundError(
            f"{path} is a file; give a checkpoint folder (iter_NNNNNNNN) or a run folder"
        )
    if (path / ".metadata").is_file():
        return path
    for folder in (path, path / "checkpoints"):
        newest = latest_checkpoint(folder)
        if newest is not None and (newest / ".metadata").is_file():
            return newest
    raise CheckpointNotFoundError(
        f"{path} holds no training checkpoint (no .metadata, no complete iter_NNNNNNNN folder)"
    )


def teacher_backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The teacher backbone of a (sharded or not) ``SSLMetaArch`` as full CPU tensors in the
    official key layout. Collective under FSDP; only rank 0 gets the tensors."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model.teacher.backbone, options=options)
    return {k: v.detach().clone() for k, v in state.items()}


def _save_atomically(state: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(TEMP_PREFIX + out.name)
    torch.save(state, temp)
    os.replace(temp, out)
    return out


def save_teacher_backbone(model: torch.nn.Module, out: Path) -> Path:
    """Write the live model's teacher backbone as a plain state dict (rank 0 writes; every
    rank must call it under FSDP)."""
    state = teacher_backbone_state(model)
    if _rank() == 0:
        _save_atomically(state, out)
    _barrier()
    return out


def export_teacher_backbone(checkpoint: Path, model: torch.nn.Module, out: Path) -> Path:
    """Write the teacher backbone of a training checkpoint as a plain state dict in the
    official DINOv2 key layout (``cls_token``, ``blocks.N.*``, ``norm.*``; no heads), the
    form ``pretrain.models.load_backbone`` loads strictly. ``model``: an
    :class:`~pretrain.train.meta_arch.SSLMetaArch` built with the run's config, sharded
    or not (full tensors are gathered)."""
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=str(checkpoint), no_dist=_single_process())
    set_model_state_dict(model, state["model"])
    return save_teacher_backbone(model, out)


def read_teacher_backbone(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The teacher backbone of a checkpoint (any world size) as full tensors, without
    building a model: only its entries are read, in one process."""
    path = resolve_checkpoint(checkpoint)
    metadata = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    wanted = {
        key[len("model.") :]: torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in metadata.items()
        if key.startswith(TEACHER_BACKBONE_PREFIX) and isinstance(entry, TensorStorageMetadata)
    }
    if not wanted:
        raise CheckpointNotFoundError(
            f"{path} holds no teacher backbone ({TEACHER_BACKBONE_PREFIX}*)"
        )
    state = {"model": wanted}
    dcp.load(state, checkpoint_id=str(path), no_dist=True)
    prefix = len("teacher.backbone.")
    return {key[prefix:]: value for key, value in state["model"].items()}


def consolidate_checkpoint(checkpoint: Path, out: Path, teacher_backbone: bool = False) -> Path:
    """Turn a sharded checkpoint into one ``torch.save`` file, offline and in one process:
    the whole state (``model``, ``optimizer``, ``extra``, ``rng``; continued pretraining
    keeps the heads), or with ``teacher_backbone`` only the teacher backbone in the official
    key layout. Written atomically; returns ``out``."""
    path = resolve_checkpoint(checkpoint)
    if teacher_backbone:
        return _save_atomically(read_teacher_backbone(path), Path(out))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(TEMP_PREFIX + out.name)
    dcp_to_torch_save(str(path), str(temp))
    os.replace(temp, out)
    return out
