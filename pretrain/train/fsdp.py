"""Sharded data parallelism for DINOv2 pretraining with PyTorch FSDP2 (``fully_shard``).

DINOv2 (Oquab et al., 2023, section 5) trains with FSDP so that the four fp32 replicas
AdamW needs (student, teacher, first and second moments) are split over the ranks. Here
each network (student and teacher) is sharded the way the official code wraps it, one
FSDP unit per transformer block, one per head, and the backbone as the unit that holds
what is left (patch embedding, tokens, position embedding, final norm). Parameters become
``DTensor`` shards (``Shard(0)`` over a one-dimensional mesh); a unit all-gathers its
parameters just before its forward (and again for its backward) and frees them after;
gradients are reduce-scattered and averaged, so every rank steps AdamW on its own shard.
Keys do not change, so checkpoints (:mod:`pretrain.train.checkpoint`) read the same with
and without sharding, and reshard across world sizes.

The teacher's EMA update works on the local shards: student and teacher are sharded
alike, so shard ``i`` of a teacher parameter is the EMA of shard ``i`` of the student's.
Gradient clipping per sub-network takes the global norm (``clip_grad_norm_`` on DTensor
gradients all-reduces the partial norms).

Mixed precision (``ParallelConfig.mixed_precision``): bf16 parameters for the compute,
fp32 sharded master weights, fp32 gradient reductions, and fp32 outputs of backbones and
heads so the losses run in fp32 (the official recipe keeps fp32 reductions for heads);
full precision on CPU by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from pretrain import distributed
from pretrain.train.config import ParallelConfig

# The models are meta_arch's Network (backbone + heads) and SSLMetaArch (student + teacher),
# typed as nn.Module here: meta_arch imports this module's tensor helpers.

logger = logging.getLogger(__name__)

SINGLE_PROCESS = "single"


# ---------------------------------------------------------------------- tensor helpers


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view: in-place ops update the DTensor); a plain
    tensor as is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def ema_update_(
    teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], momentum: float
) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student``, in place, shard by shard.

    Both lists must be sharded alike (the same FSDP layout), which :func:`shard_model`
    guarantees; on plain tensors this is the usual EMA.
    """
    teacher_local = [local_tensor(t) for t in teacher]
    student_local = [local_tensor(s).detach() for s in student]
    # One pass: t + (1 - m) * (s - t).
    torch._foreach_lerp_(teacher_local, student_local, 1.0 - momentum)


def clip_grad_norm(parameters: Sequence[torch.Tensor], max_norm: float) -> float:
    """Clip the gradients of ``parameters`` to a total norm of ``max_norm``; return the norm
    before clipping. On sharded gradients the norm is the global one (over all ranks)."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


# ---------------------------------------------------------------------- block wrappers


def _wrap_block_forward(block: nn.Module, checkpointed: bool, compiled: bool) -> None:
    """Replace ``block.forward`` on the instance (so parameter names, hence checkpoints and
    exports, stay as they are) by a compiled and/or checkpointed version. FSDP's hooks run
    around ``forward`` in ``__call__``, so they stay outside both wrappers."""
    forward: Callable[..., Any] = block.forward
    if compiled:
        forward = torch.compile(forward)
    if checkpointed:
        inner = forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            # Non-reentrant: inputs may be lists of tensors (global and local crops); the RNG
            # state is restored for the recompute, so stochastic depth drops the same samples.
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward


def wrap_blocks(network: nn.Module, activation_checkpointing: bool, compile_blocks: bool) -> None:
    """Activation checkpointing and/or ``torch.compile`` per transformer block."""
    if not (activation_checkpointing or compile_blocks):
        return
    for block in network.backbone.iter_blocks():
        _wrap_block_forward(block, activation_checkpointing, compile_blocks)


# ---------------------------------------------------------------------- sharding


def mixed_precision_policy(
    setting: str, device_type: str
) -> tuple[MixedPrecisionPolicy, MixedPrecisionPolicy]:
    """``(blocks, backbones_and_heads)`` policies for ``ParallelConfig.mixed_precision``: the
    second also casts outputs to fp32, so the losses never see bf16 tensors."""
    if setting == "fp32" or (setting == "auto" and device_type != "cuda"):
        full = MixedPrecisionPolicy()
        return full, full
    blocks = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    outputs = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=torch.float32
    )
    return blocks, outputs


def shard_network(
    network: nn.Module,
    mesh: DeviceMesh,
    mixed_precision: str = "auto",
    reshard_after_forward: bool = True,
) -> None:
    """``fully_shard`` each block, each (distinct) head, then the backbone."""
    blocks_policy, outputs_policy = mixed_precision_policy(mixed_precision, mesh.device_type)
    for block in network.backbone.iter_blocks():
        fully_shard(
            block, mesh=mesh, mp_policy=blocks_policy, reshard_after_forward=reshard_after_forward
        )
    for head in network.heads():
        fully_shard(
            head, mesh=mesh, mp_policy=outputs_policy, reshard_after_forward=reshard_after_forward
        )
    fully_shard(
        network.backbone,
        mesh=mesh,
        mp_policy=outputs_policy,
        reshard_after_forward=reshard_after_forward,
    )


def build_mesh(device: torch.device) -> DeviceMesh:
    """The one-dimensional mesh of all ranks (the process group must be initialised)."""
    return init_device_mesh(device.type, (distributed.get_world_size(),))


def shard_model(model: nn.Module, mesh: DeviceMesh, cfg: ParallelConfig) -> None:
    """Shard student and teacher alike (so the EMA can pair local shards). The teacher is
    resharded after its forward whatever the setting: it has no backward to do it."""
    shard_network(model.student, mesh, cfg.mixed_precision, cfg.reshard_after_forward)
    shard_network(model.teacher, mesh, cfg.mixed_precision, reshard_after_forward=True)


def prepare_model(model: nn.Module, cfg: ParallelConfig, device: torch.device) -> str:
    """Apply the block wrappers and the parallel strategy; return the strategy in use
    (``fsdp``, ``ddp`` or ``single`` without a process group). Build the optimizer after
    this: sharding replaces the parameters."""
    wrap_blocks(model.student, cfg.activation_checkpointing, cfg.compile)
    wrap_blocks(model.teacher, False, cfg.compile)
    if not distributed.is_enabled():
        return SINGLE_PROCESS
    if cfg.strategy == "fsdp":
        shard_model(model, build_mesh(device), cfg)
        logger.info(
            "FSDP over %d ranks (mixed precision: %s)",
            distributed.get_world_size(),
            cfg.mixed_precision,
        )
    return cfg.strategy
