"""Train-step time and peak memory of DINOv2 ViT-S/14 pretraining on CPU, beside the official
implementation's figures on the same kind of machine.

One full training step as the official loop runs it (Oquab et al., 2023): ``forward_backward``
(teacher on 2 global crops, student on the masked global crops and 8 local crops, DINO +
iBOT + KoLeo losses, backward), gradient clipping per sub-network (backbone, head),
AdamW with the DINOv2 parameter groups, and the teacher EMA. ViT-S/14, batch 4 images,
2 x 224 px global + 8 x 98 px local crops, a shared DINO/iBOT head with 65,536
prototypes, 2 threads; stochastic depth 0 and 0.3 (at 0.3 the efficient form: each
residual branch computed only on a random 70 % of the batch).

Each configuration runs in its own subprocess so its peak RSS (``VmHWM`` from
``/proc/self/status``: the whole process, model, optimizer state and data included) is its
own. Batches are made before the timing (multi-crop and masking are the data loader's
work). Time: median wall-clock seconds of ``--steps`` steps after ``--warmup`` steps, and
the median process CPU time per step (user + system over all threads: on a machine shared
with other work it says how much computing a step took, where the wall clock also counts
waiting for a core). ``--profile`` prints
a ``torch.profiler`` table of one step per configuration (operators by self CPU time).

Anchor: the official DINOv2 code on this kind of 2-core machine (CPU, no xFormers, same
configuration): 5.42 s/step and 3,016 MiB peak RSS with drop path 0; 4.00 s and
2,559 MiB with drop path 0.3.

Usage: ``python benchmarks/bench_pretrain.py [--steps 5] [--warmup 2] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ANCHOR = {  # official implementation: seconds per step, peak RSS MiB
    0.0: (5.42, 3016.0),
    0.3: (4.00, 2559.0),
}
DROP_PATH_RATES = (0.0, 0.3)
BATCH_SIZE = 4


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _load_average() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def _batches(cfg, count: int) -> list[dict]:
    import numpy as np

    from pretrain.data.augmentations import MultiCropConfig
    from pretrain.data.batches import TrainingBatchMaker

    crops = cfg.crops
    maker = TrainingBatchMaker(
        MultiCropConfig(
            global_crops_size=crops.global_crops_size,
            local_crops_size=crops.local_crops_size,
            local_crops_number=crops.local_crops_number,
        ),
        cfg.backbone.patch_size,
        cfg.loss.mask_ratio,
        cfg.loss.mask_probability,
    )
    rng = np.random.default_rng(0)
    batches = []
    for index in range(count):
        images = [rng.integers(0, 256, (256, 320, 3), dtype=np.uint8) for _ in range(BATCH_SIZE)]
        batches.append(maker(images, [f"{index}-{i}" for i in range(BATCH_SIZE)], index))
    return batches


def run_configuration(drop_path_rate: float, steps: int, warmup: int, profile: bool) -> dict:
    import torch

    from pretrain.train.config import BackboneConfig, PretrainConfig
    from pretrain.train.meta_arch import SSLMetaArch
    from pretrain.train.optim import apply_schedules, build_optimizer, build_param_groups
    from pretrain.train.schedules import build_schedules

    cfg = PretrainConfig(
        backbone=BackboneConfig(
            arch="vit_small", patch_size=14, drop_path_rate=drop_path_rate, drop_path_uniform=True
        ),
        batch_size_per_rank=BATCH_SIZE,
    )
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    model.train()
    groups = build_param_groups(
        model.student.backbone, model.student.heads(), model.depth, cfg.optim
    )
    optimizer = build_optimizer(groups, cfg.optim)
    schedules = build_schedules(cfg.optim, BATCH_SIZE)
    batches = _batches(cfg, 2)
    values = schedules.at(cfg.optim.total_iterations // 2)  # mid-training: nothing frozen

    def step(batch: dict) -> float:
        apply_schedules(optimizer, values["lr"], values["weight_decay"], values["last_layer_lr"])
        optimizer.zero_grad(set_to_none=True)
        total, _ = model.forward_backward(batch, values["teacher_temp"])
        model.clip_gradients(cfg.optim.clip_grad)
        optimizer.step()
        model.update_teacher(values["momentum"])
        return float(total)

    for index in range(warmup):
        step(batches[index % len(batches)])
    load_before = _load_average()
    times, cpu_times, losses = [], [], []
    for index in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        losses.append(step(batches[index % len(batches)]))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    load_after = _load_average()
    result = {
        "drop_path_rate": drop_path_rate,
        "seconds_per_step": statistics.median(times),
        "seconds_all": times,
        "cpu_seconds_per_step": statistics.median(cpu_times),
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "losses": losses,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": [load_before, load_after],
    }
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            step(batches[0])
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        print(table, file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile one step per setting")
    parser.add_argument(
        "--passive-wait",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, so the "
        "CPU time counts work only (for a machine shared with other jobs)",
    )
    parser.add_argument("--drop-path", type=float, help="internal: run one configuration")
    args = parser.parse_args(argv)

    if args.drop_path is not None:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_configuration(args.drop_path, args.steps, args.warmup, args.profile)))
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.passive_wait:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    results = []
    for rate in DROP_PATH_RATES:
        command = [sys.executable, __file__, "--drop-path", str(rate)]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        command += ["--threads", str(args.threads)] + (["--profile"] if args.profile else [])
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    first = results[0]
    print(
        f"DINOv2 ViT-S/14 train step on CPU: batch {BATCH_SIZE}, 2 x 224 + 8 x 98 crops, "
        f"65,536 prototypes, {first['threads']} threads, torch {first['torch']}; "
        f"median of {args.steps} steps after {args.warmup} warm-up"
        + ("; OpenMP passive wait" if args.passive_wait else "")
    )
    print(
        f"{'drop path':>9}  {'s/step':>7}  {'official':>8}  {'CPU s/step':>10}  "
        f"{'peak RSS MiB':>12}  {'official':>8}"
    )
    for result in results:
        seconds, rss = ANCHOR[result["drop_path_rate"]]
        print(
            f"{result['drop_path_rate']:>9.1f}  {result['seconds_per_step']:>7.2f}  "
            f"{seconds:>8.2f}  {result['cpu_seconds_per_step']:>10.2f}  "
            f"{result['peak_rss_mib']:>12,.0f}  {rss:>8,.0f}"
            f"   (load average {result['load_average'][0]:.2f} -> "
            f"{result['load_average'][1]:.2f}; steps "
            + ", ".join(f"{t:.2f}" for t in result["seconds_all"])
            + ")"
        )


if __name__ == "__main__":
    main()
