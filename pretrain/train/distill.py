"""Distillation of a smaller student from a frozen, larger teacher, the way DINOv2 made its
ViT-S/B/L (Oquab et al., 2023, section 5: "we use a larger model as a frozen teacher, keep
a spare EMA of the student that we use as our final model, remove the masking and
stochastic depth, and apply the iBOT loss on the two global crops").

The networks of a distillation run (:class:`DistillationMetaArch`):

* ``frozen_teacher``: backbone, DINO head and iBOT head of the teacher checkpoint's EMA
  teacher, loaded once and never updated (no gradient, no EMA, always in eval mode).
* ``student``: ``cfg.backbone`` with fresh heads. Their prototype counts must equal the
  teacher's: student prototype ``k`` learns to match the teacher's prototype ``k``.
* ``teacher``: the EMA of the student, as in any run. It is the released model, and keeps
  its name so that exports (``lvd checkpoint consolidate --teacher-backbone``), embedding
  and k-NN evaluation read the distilled model where they read every run's.

The losses are pretraining's, with the frozen teacher's outputs as targets: DINO on the CLS
tokens with Sinkhorn-Knopp centering, iBOT on every patch of both global crops (nothing is
masked, so every patch of the student's crop has the teacher's patch at the same place as
its target; each crop counts once, as a masked crop does in pretraining), KoLeo on the
student's CLS tokens. :func:`distillation_config` sets what the recipe fixes
(``loss.centering=sinkhorn_knopp``, ``loss.mask_probability=0``,
``backbone.drop_path_rate=0``) and logs what it changed.

Teacher checkpoints are ours, with heads: an ``iter_NNNNNNNN`` folder, a run or checkpoints
folder (its newest), or the single file ``lvd checkpoint consolidate`` writes without
``--teacher-backbone``. Backbone-only files (the official releases, ``--teacher-backbone``
exports) are refused: the heads' prototypes are the targets. The teacher's backbone is
built from the shapes of its tensors, with the head count from the config the checkpoint
carries (``extra.config``) or its run's ``config.json``, else 64-wide heads as in every
DINOv2 size; its heads from their shapes. Patch sizes must match (iBOT pairs patches).

Every rank reads the whole teacher; under FSDP it is then sharded like the other networks.
It is saved in every checkpoint of the run (a resume needs nothing else), so checkpoints
grow by the teacher's size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from pretrain.layers.dino_head import DINOHeadConfig, build_heads
from pretrain.models import checkpoint_geometry, checkpoint_size
from pretrain.train.checkpoint import resolve_checkpoint, stored_keys
from pretrain.train.config import BackboneConfig, PretrainConfig, PretrainConfigError
from pretrain.train.fsdp import build_mesh, shard_network, wrap_blocks
from pretrain.train.meta_arch import Network, SSLMetaArch, build_backbone

logger = logging.getLogger(__name__)

TEACHER_PREFIX = "teacher."  # the EMA teacher's keys in a checkpoint's model state
FROZEN_TEACHER = "frozen_teacher"
NO_HEADS = (
    "holds a backbone without DINO/iBOT heads (an official release or a --teacher-backbone "
    "export); distillation needs the teacher's heads, whose prototypes are the student's "
    "targets: give a training checkpoint (an iter_NNNNNNNN folder, a run folder, or the file "
    "of `lvd checkpoint consolidate` without --teacher-backbone)"
)


class DistillationError(PretrainConfigError):
    """A teacher checkpoint that cannot teach this student; the message says why."""


# ---------------------------------------------------------------------- config


def distillation_config(cfg: PretrainConfig) -> PretrainConfig:
    """``cfg`` with what distillation fixes: Sinkhorn-Knopp centering, no masking, no
    stochastic depth (as is, without a teacher checkpoint)."""
    if not cfg.distill.teacher_checkpoint:
        return cfg
    loss = dataclasses.replace(cfg.loss, centering="sinkhorn_knopp", mask_probability=0.0)
    backbone = dataclasses.replace(cfg.backbone, drop_path_rate=0.0)
    changed = [
        f"{name}={before}->{after}"
        for name, before, after in (
            ("loss.centering", cfg.loss.centering, loss.centering),
            ("loss.mask_probability", cfg.loss.mask_probability, loss.mask_probability),
            ("backbone.drop_path_rate", cfg.backbone.drop_path_rate, backbone.drop_path_rate),
        )
        if before != after
    ]
    if changed:
        logger.info("distillation sets %s", ", ".join(changed))
    return dataclasses.replace(cfg, loss=loss, backbone=backbone)


# ---------------------------------------------------------------------- teacher checkpoints


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher checkpoint holds, read from shapes (no tensor loaded)."""

    path: str
    backbone: BackboneConfig
    img_size: int  # of its position-embedding grid; other sizes are interpolated
    dino_head: DINOHeadConfig
    ibot_head: DINOHeadConfig | None  # None: shared with the DINO head

    @property
    def ibot_prototypes(self) -> int:
        return (self.ibot_head or self.dino_head).out_dim


def _file_state(path: Path, mmap: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(EMA teacher tensors without the prefix, extra)`` of a consolidated checkpoint."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise DistillationError(f"{path} is not a torch checkpoint: {exc}") from None
    if not isinstance(loaded, dict):
        raise DistillationError(f"{path} holds a {type(loaded).__name__}, not a checkpoint")
    model = loaded.get("model")
    if not isinstance(model, dict) or not any(k.startswith(TEACHER_PREFIX) for k in model):
        if any(k in loaded for k in ("cls_token", "pos_embed")) or "teacher" in loaded:
            raise DistillationError(f"{path} {NO_HEADS}")
        raise DistillationError(
            f"{path} is not an lvd training checkpoint (no model.teacher.* entries)"
        )
    state = {k[len(TEACHER_PREFIX) :]: v for k, v in model.items() if k.startswith(TEACHER_PREFIX)}
    extra = loaded.get("extra")
    return state, extra if isinstance(extra, dict) else {}


def _folder_shapes(path: Path) -> dict[str, torch.Size]:
    metadata = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = "model." + TEACHER_PREFIX
    return {
        key[len(prefix) :]: entry.size
        for key, entry in metadata.items()
        if key.startswith(prefix) and isinstance(entry, TensorStorageMetadata)
    }


def _saved_config(path: Path) -> dict[str, Any] | None:
    """The run config a checkpoint folder carries, or its run folder's ``config.json``."""
    if "extra.config" in stored_keys(path):
        state: dict[str, Any] = {"extra": {"config": ""}}
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
        return json.loads(state["extra"]["config"])
    run_config = path.parent.parent / "config.json"  # <run>/checkpoints/iter_N
    if run_config.is_file():
        return json.loads(run_config.read_text())
    return None


def _head_config(shapes: dict[str, torch.Size], name: str) -> DINOHeadConfig | None:
    prototypes = shapes.get(f"{name}.last_layer.weight_v")
    if prototypes is None:
        return None
    linear = [k for k in shapes if re.fullmatch(rf"{re.escape(name)}\.mlp(\.\d+)?\.weight", k)]
    first = shapes.get(f"{name}.mlp.0.weight")
    return DINOHeadConfig(
        out_dim=int(prototypes[0]),
        hidden_dim=int(first[0]) if first is not None else DINOHeadConfig.hidden_dim,
        bottleneck_dim=int(prototypes[1]),
        nlayers=len(linear),
    )


def _spec_from_shapes(
    path: str, shapes: dict[str, torch.Size], saved: dict[str, Any] | None
) -> TeacherSpec:
    dino = _head_config(shapes, "dino_head")
    if dino is None:
        raise DistillationError(f"{path} {NO_HEADS}")
    meta = {
        k[len("backbone.") :]: torch.empty(s, device="meta")
        for k, s in shapes.items()
        if k.startswith("backbone.")
    }
    geometry, size = checkpoint_geometry(meta), checkpoint_size(meta)
    if "patch_size" not in geometry or "img_size" not in geometry or "depth" not in size:
        raise DistillationError(f"{path}: its teacher backbone has no patch embedding or blocks")
    saved_heads = ((saved or {}).get("backbone") or {}).get("num_heads")
    backbone = BackboneConfig(
        arch="vit",
        patch_size=geometry["patch_size"],
        embed_dim=size["embed_dim"],
        depth=size["depth"],
        num_heads=int(saved_heads) if saved_heads else size["num_heads"],
        drop_path_rate=0.0,
        layerscale=geometry["init_values"],
        num_register_tokens=geometry.get("num_register_tokens", 0),
        ffn_layer="swiglufused" if any(k.endswith(".mlp.w12.weight") for k in meta) else "mlp",
    )
    return TeacherSpec(
        path, backbone, geometry["img_size"], dino, _head_config(shapes, "ibot_head")
    )


def describe_teacher(checkpoint: str | Path) -> TeacherSpec:
    """Read a teacher checkpoint's architecture (shapes only), refusing one without heads."""
    path = Path(checkpoint)
    if path.is_file():
        state, extra = _file_state(path, mmap=True)
        saved = json.loads(extra["config"]) if "config" in extra else None
        return _spec_from_shapes(str(path), {k: v.shape for k, v in state.items()}, saved)
    folder = resolve_checkpoint(path)
    shapes = _folder_shapes(folder)
    if not shapes:
        raise DistillationError(f"{folder} {NO_HEADS}")
    return _spec_from_shapes(str(folder), shapes, _saved_config(folder))


def _load_teacher_state(spec: TeacherSpec) -> dict[str, torch.Tensor]:
    path = Path(spec.path)
    if path.is_file():
        return _file_state(path, mmap=False)[0]
    metadata = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = "model." + TEACHER_PREFIX
    wanted = {
        key[len("model.") :]: torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in metadata.items()
        if key.startswith(prefix) and isinstance(entry, TensorStorageMetadata)
    }
    state = {"model": wanted}
    dcp.load(state, checkpoint_id=str(path), no_dist=True)
    return {k[len(TEACHER_PREFIX) :]: v for k, v in state["model"].items()}


def check_teacher_fits(cfg: PretrainConfig, spec: TeacherSpec) -> None:
    """Refuse a teacher whose patches or prototypes do not pair with the student's."""
    if spec.backbone.patch_size != cfg.backbone.patch_size:
        raise DistillationError(
            f"the teacher {spec.path} has patch size {spec.backbone.patch_size}, the student "
            f"{cfg.backbone.patch_size}; iBOT pairs their patches: set "
            f"backbone.patch_size={spec.backbone.patch_size}"
        )
    loss = cfg.loss
    student_dino = loss.dino_head.out_dim
    if student_dino != spec.dino_head.out_dim:
        raise DistillationError(
            f"the teacher's DINO head has {spec.dino_head.out_dim} prototypes, the student's "
            f"{student_dino}: set loss.dino_head.out_dim={spec.dino_head.out_dim} (the student's "
            "heads are trained from scratch to match the teacher's prototypes one by one)"
        )
    student_ibot = (
        (loss.ibot_head or loss.dino_head).out_dim if loss.separate_ibot_head else student_dino
    )
    if student_ibot != spec.ibot_prototypes:
        key = "loss.ibot_head.out_dim" if loss.separate_ibot_head else "a separate iBOT head"
        raise DistillationError(
            f"the teacher's iBOT head has {spec.ibot_prototypes} prototypes, the student's "
            f"{student_ibot}: give the student {key} with {spec.ibot_prototypes} "
            "(loss.separate_ibot_head=true, loss.ibot_head.out_dim=...)"
        )


def build_frozen_teacher(spec: TeacherSpec) -> Network:
    """The teacher network with its checkpoint's weights (strictly), frozen."""
    backbone = build_backbone(spec.backbone, spec.img_size, teacher=True)
    heads = build_heads(
        backbone.embed_dim, spec.dino_head, spec.ibot_head, spec.ibot_head is not None
    )
    network = Network(backbone, *heads)
    network.load_state_dict(_load_teacher_state(spec), strict=True)
    network.requires_grad_(False)
    return network.eval()


# ---------------------------------------------------------------------- meta-architecture


def every_patch_as_target(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with every patch of the global crops an iBOT position (weight ``1 / patches
    per crop``), in place of the masked ones; the crops themselves stay unmasked."""
    masks = batch["collated_masks"]
    if bool(masks.any()):
        raise DistillationError("distillation batches must be unmasked (loss.mask_probability=0)")
    n_images, n_tokens = masks.shape
    total = n_images * n_tokens
    return {
        **batch,
        "mask_indices_list": torch.arange(total, device=masks.device),
        "masks_weight": torch.full((total,), 1.0 / n_tokens, device=masks.device),
        "n_masked_patches": torch.full((1,), total, dtype=torch.long, device=masks.device),
    }


class DistillationMetaArch(SSLMetaArch):
    """:class:`SSLMetaArch` whose targets come from a frozen teacher network."""

    def __init__(self, cfg: PretrainConfig, frozen_teacher: Network) -> None:
        if cfg.loss.centering != "sinkhorn_knopp" or cfg.loss.mask_probability:
            raise DistillationError("build the config with distillation_config()")
        super().__init__(cfg)
        self.frozen_teacher = frozen_teacher.requires_grad_(False)

    def train(self, mode: bool = True) -> DistillationMetaArch:
        super().train(mode)
        self.frozen_teacher.eval()
        return self

    def target_network(self) -> Network:
        return self.frozen_teacher

    def forward_backward(
        self, batch: dict[str, Any], teacher_temp: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return super().forward_backward(every_patch_as_target(batch), teacher_temp)


def build_meta_arch(cfg: PretrainConfig) -> SSLMetaArch:
    """The model of a run: :class:`DistillationMetaArch` with its teacher loaded when
    ``cfg.distill.teacher_checkpoint`` is set (``cfg`` from :func:`distillation_config`),
    else :class:`SSLMetaArch`."""
    if not cfg.distill.teacher_checkpoint:
        return SSLMetaArch(cfg)
    spec = describe_teacher(cfg.distill.teacher_checkpoint)
    check_teacher_fits(cfg, spec)
    model = DistillationMetaArch(cfg, build_frozen_teacher(spec))
    logger.info(
        "distilling from %s (%d-d, %d blocks) into a %d-d, %d-block student",
        spec.path,
        spec.backbone.embed_dim,
        spec.backbone.depth,
        model.embed_dim,
        model.depth,
    )
    return model


def prepare_frozen_teacher(
    model: SSLMetaArch, cfg: PretrainConfig, device: torch.device, strategy: str
) -> None:
    """Under FSDP, shard the frozen teacher like the EMA teacher (resharded after its
    forward); with ``parallel.compile``, compile its blocks. Other strategies keep a copy
    per rank (it has no gradient to average)."""
    if not isinstance(model, DistillationMetaArch):
        return
    wrap_blocks(model.frozen_teacher, False, cfg.parallel.compile)
    if strategy == "fsdp":
        shard_network(model.frozen_teacher, build_mesh(device), cfg.parallel.mixed_precision)


def check_resume(checkpoint: Path, cfg: PretrainConfig) -> None:
    """Refuse to resume a distillation run without its teacher, or the reverse."""
    distilled = any(k.startswith(f"model.{FROZEN_TEACHER}.") for k in stored_keys(checkpoint))
    distilling = bool(cfg.distill.teacher_checkpoint)
    if distilled and not distilling:
        raise DistillationError(
            f"{checkpoint} is from a distillation run: resume it with --distill-from "
            "(distill.teacher_checkpoint) as before"
        )
    if distilling and not distilled:
        raise DistillationError(
            f"{checkpoint} is from a run without distillation: resume it without "
            "--distill-from, or distill into a new --out"
        )
