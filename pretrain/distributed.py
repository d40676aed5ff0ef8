"""Thin helpers over ``torch.distributed`` that degrade to no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_enabled() -> bool:
    """True when a process group is initialised (collectives must then run on every rank)."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def all_reduce_(
    tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM
) -> torch.Tensor:
    """All-reduce ``tensor`` in place when distributed; return it either way."""
    if is_enabled():
        dist.all_reduce(tensor, op=op)
    return tensor
