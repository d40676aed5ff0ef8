"""The DINOv2 training loop (Oquab et al., 2023) over shards or a folder of images.

Per iteration: schedules -> teacher targets and student losses (:class:`SSLMetaArch`) ->
gradients averaged over ranks (reduce-scattered by FSDP, or all-reduced with
``parallel.strategy=ddp``; :mod:`pretrain.train.fsdp`) -> clipping per sub-network ->
AdamW -> teacher EMA -> one JSONL line of metrics. Checkpoints
(:mod:`pretrain.train.checkpoint`) carry the loader position and the resolved config, so a
resumed run continues at the exact next sample. Optional: a final high-resolution phase
(:mod:`pretrain.train.high_res`) and distillation from a frozen teacher
(:mod:`pretrain.train.distill`). A NaN or infinite loss stops every rank before the optimizer
step, with the last good checkpoint left intact.

Launch with ``torchrun --nproc_per_node=N -m pretrain.train.loop --source ... --out ...``
(gloo on CPU, NCCL on GPU), or through ``lvd pretrain``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain import distributed
from pretrain.data.augmentations import MultiCropConfig
from pretrain.data.batches import TrainingBatchMaker
from pretrain.data.shards import ShardStream, StreamPosition, make_loader, open_catalog
from pretrain.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pretrain.train.config import CropConfig, DistillConfig, PretrainConfig
from pretrain.train.distill import (
    build_meta_arch,
    check_resume,
    distillation_config,
    prepare_frozen_teacher,
)
from pretrain.train.fsdp import prepare_model
from pretrain.train.high_res import PhasedBatches
from pretrain.train.optim import apply_schedules, build_optimizer, build_param_groups
from pretrain.train.schedules import build_schedules

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FOLDER = "checkpoints"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the optimizer step."""


@dataclass(frozen=True)
class TrainResult:
    iterations: int
    last_checkpoint: str | None
    losses: list[float]


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); ``(rank, world)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not distributed.is_enabled():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if distributed.is_enabled():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def training_device() -> torch.device:
    """This rank's GPU (``LOCAL_RANK``) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def _to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _crop_config(crops: CropConfig) -> MultiCropConfig:
    return MultiCropConfig(
        global_crops_size=crops.global_crops_size,
        local_crops_size=crops.local_crops_size,
        local_crops_number=crops.local_crops_number,
        global_crops_scale=crops.global_crops_scale,
        local_crops_scale=crops.local_crops_scale,
        blur_probabilities=crops.blur_probabilities,
    )


def average_gradients(model: torch.nn.Module) -> None:
    """Mean of the student's gradients over ranks (data parallelism without FSDP)."""
    if not distributed.is_enabled():
        return
    world = dist.get_world_size()
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(world)


PROGRESS_EVERY_S = 10.0  # seconds between progress lines (each iteration is logged at DEBUG)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this rank so far: allocated CUDA memory on a GPU, the process's peak
    resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    if not distributed.is_enabled() or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(names, tensor.tolist()))


def _trim_metrics(path: Path, before_iteration: int) -> None:
    """Drop metric lines of iterations a resumed run will redo."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["iteration"] < before_iteration]
    path.write_text("".join(line + "\n" for line in kept))


def train(
    cfg: PretrainConfig,
    source: str,
    out_dir: str | os.PathLike[str],
    max_iterations: int | None = None,
) -> TrainResult:
    """Train (or resume from the newest checkpoint in ``out_dir``) up to the configured
    iterations, or ``max_iterations`` in total; every rank calls this."""
    rank, world_size = init_distributed()
    cfg = distillation_config(cfg)
    out = Path(out_dir)
    catalog = open_catalog(source)
    cfg.check(world_size=world_size, num_sources=len(catalog))
    checkpoints = out / CHECKPOINT_FOLDER
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    device = training_device()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_meta_arch(cfg).to(device)
    model.train()
    strategy = prepare_model(model, cfg.parallel, device)  # before the optimizer: it shards
    prepare_frozen_teacher(model, cfg, device, strategy)
    groups = build_param_groups(
        model.student.backbone, model.student.heads(), model.depth, cfg.optim
    )
    optimizer = build_optimizer(groups, cfg.optim)
    schedules = build_schedules(cfg.optim, cfg.batch_size_per_rank * world_size)
    torch.manual_seed(cfg.seed * 7919 + rank + 1)  # stochastic depth differs per rank

    start, position = 0, StreamPosition()
    resume_from = latest_checkpoint(checkpoints)
    if resume_from is not None:
        check_resume(resume_from, cfg)
        extra = load_checkpoint(resume_from, model, optimizer)
        start = int(extra["iteration"])
        position = StreamPosition(int(extra["samples_seen"]))
        logger.info("resumed from %s at iteration %d", resume_from, start)
    metrics_path = out / METRICS_FILE
    if rank == 0:
        _trim_metrics(metrics_path, start)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def open_loader(crops: CropConfig, iteration: int):
        stream = ShardStream(
            catalog,
            cfg.batch_size_per_rank,
            TrainingBatchMaker(
                _crop_config(crops),
                cfg.backbone.patch_size,
                cfg.loss.mask_ratio,
                cfg.loss.mask_probability,
            ),
            rank=rank,
            world_size=world_size,
            seed=cfg.seed,
            position=position.advanced(iteration - start, cfg.batch_size_per_rank, world_size),
        )
        return iter(make_loader(stream, num_workers=cfg.num_workers))

    batches = PhasedBatches(cfg, open_loader)  # new crops (and loader) at the high-res phase
    end = cfg.optim.total_iterations
    if max_iterations is not None:
        end = min(end, max_iterations)
    last_checkpoint = str(resume_from) if resume_from else None
    losses: list[float] = []
    iteration = start
    started = time.perf_counter()
    waited = 0.0  # seconds blocked on the loader since `started`
    last_line = started  # when the last progress line was logged
    for iteration in range(start, end):
        step_started = time.perf_counter()
        batch = _to_device(batches.next(iteration), device)
        wait = time.perf_counter() - step_started
        waited += wait
        values = schedules.at(iteration)
        apply_schedules(optimizer, values["lr"], values["weight_decay"], values["last_layer_lr"])
        optimizer.zero_grad(set_to_none=True)
        total, loss_dict = model.forward_backward(batch, values["teacher_temp"])
        loss_dict = _mean_over_ranks(loss_dict)
        if not math.isfinite(loss_dict["total_loss"]):
            raise TrainingDivergedError(
                f"loss is {loss_dict['total_loss']} at iteration {iteration}; stopped before "
                f"the optimizer step. Last good checkpoint: {last_checkpoint or 'none'}. "
                "Lower optim.base_lr or raise optim.warmup_epochs"
            )
        if strategy == "ddp":
            average_gradients(model.student)
        model.clip_gradients(cfg.optim.clip_grad)
        optimizer.step()
        model.update_teacher(values["momentum"])
        losses.append(loss_dict["total_loss"])
        done = iteration + 1
        if rank == 0:
            elapsed = time.perf_counter() - started
            record = {"iteration": iteration, **loss_dict, **values}
            record["images_per_s"] = (
                (done - start) * cfg.batch_size_per_rank * world_size / max(elapsed, 1e-9)
            )
            record["step_s"] = time.perf_counter() - step_started
            record["data_wait_s"] = wait  # this step's time blocked on the loader
            record["data_wait_fraction"] = waited / max(elapsed, 1e-9)  # since the (re)start
            record["peak_memory_mib"] = peak_memory_mib(device)
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            now = time.perf_counter()
            if done in (start + 1, end) or now - last_line >= PROGRESS_EVERY_S:
                last_line = now
                left = (end - done) * elapsed / (done - start)
                logger.info(
                    "iteration %d/%d loss %.4f, %.1f images/s, %.0f%% of the time waiting for "
                    "data, about %s left",
                    done,
                    end,
                    loss_dict["total_loss"],
                    record["images_per_s"],
                    100 * record["data_wait_fraction"],
                    _duration(left),
                )
            logger.debug("iteration %d/%d loss %.4f", done, end, loss_dict["total_loss"])
        if done % cfg.checkpoint_every == 0 or done == end:
            # Pending (lazy) center updates are applied now so the checkpoint holds them.
            model.dino_loss.apply_center_update()
            model.ibot_patch_loss.apply_center_update()
            extra = {
                "iteration": done,
                "world_size": world_size,
                "samples_seen": position.advanced(
                    done - start, cfg.batch_size_per_rank, world_size
                ).samples_seen,
                # What the run was (a distillation teacher's architecture is read from it).
                "config": json.dumps(asdict(cfg)),
            }
            last_checkpoint = str(
                save_checkpoint(
                    checkpoints, done, model, optimizer, extra, keep=cfg.keep_checkpoints
                )
            )
    return TrainResult(iterations=end, last_checkpoint=last_checkpoint, losses=losses)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``torchrun -m pretrain.train.loop``."""
    from curation.config import load_config

    parser = argparse.ArgumentParser(prog="pretrain.train.loop")
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", type=Path, action="append", default=[])
    parser.add_argument("--max-iterations", type=int)
    parser.add_argument("--distill-from", help="teacher checkpoint (pretrain.train.distill)")
    parser.add_argument("overrides", nargs="*")
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = load_config(PretrainConfig, ns.config, ns.overrides)
    if ns.distill_from:
        cfg = replace(cfg, distill=DistillConfig(ns.distill_from))
    try:
        train(cfg, ns.source, ns.out, ns.max_iterations)
    finally:
        if distributed.is_enabled():
            # Free the sharded model (FSDP holds reference cycles) and the collectives' buffers
            # while the interpreter is whole: gloo work objects still alive at interpreter
            # teardown can abort the process (pytorch/pytorch#179291).
            gc.collect()
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
