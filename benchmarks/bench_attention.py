"""Speed and memory of one ViT-S/14 forward+backward: fused SDPA vs plain attention.

DINOv2 (Oquab et al., 2023, section 5) attributes much of its memory saving to fused
attention kernels. This microbenchmark runs the same ViT-S/14 (224 px, batch 8 by
default) once with ``torch.nn.functional.scaled_dot_product_attention`` and once with the
plain ``softmax(q k^T / sqrt(d)) v`` path of ``pretrain.layers.attention.Attention``
(``use_sdpa=False``), each in a fresh subprocess so neither inherits the other's memory.

What is measured, per variant:

* time: median wall-clock seconds of ``--steps`` forward+backward steps, after one
  warm-up step (which also allocates the gradients);
* memory on CPU: the peak resident set size during one step minus the resident set size
  just before it (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``),
  measured in a separate subprocess where glibc's malloc is told to serve every block of
  64 KiB or more with its own mmap and to unmap it on free (``MALLOC_MMAP_THRESHOLD_``).
  Without that, malloc keeps freed memory resident and reuses it, and the RSS delta would
  depend on what the warm-up step left behind rather than on the step itself. So the
  figure is the peak of live PyTorch buffers (activations, saved tensors, temporaries and
  kernel workspaces; page-rounded) that the step adds on top of parameters, gradients and
  optimiser-free model state. The timing subprocesses run with the default malloc;
* memory on CUDA: ``torch.cuda.max_memory_allocated`` during one step minus the memory
  allocated before it (tensor bytes, excluding the caching allocator's reserve).

Usage: ``python benchmarks/bench_attention.py [--batch-size 8] [--steps 3] [--device cpu]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping

VARIANTS = ("sdpa", "plain")
MMAP_THRESHOLD_BYTES = 64 * 1024


def _read_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> None:
    # Writing 5 resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def run_variant(variant: str, batch_size: int, steps: int, device: str, image_size: int) -> dict:
    import torch

    from pretrain.models import build_model

    torch.manual_seed(0)
    model = build_model(
        "vit_small",
        patch_size=14,
        img_size=image_size,
        init_values=1e-5,
        block_chunks=0,
        use_sdpa=variant == "sdpa",
    ).to(device)
    model.train()
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)

    def step() -> None:
        out = model.forward_features(images)
        loss = out["x_norm_clstoken"].pow(2).mean() + out["x_norm_patchtokens"].pow(2).mean()
        loss.backward()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up: kernels chosen, gradients allocated
    sync()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        sync()
        peak_mib = (torch.cuda.max_memory_allocated() - before) / 2**20
        memory_kind = "peak tensor bytes above baseline (CUDA allocator)"
    else:
        _reset_peak_rss()
        before_kib = _read_status_kib("VmRSS")
        step()
        peak_mib = (_read_status_kib("VmHWM") - before_kib) / 1024
        memory_kind = "peak RSS above the pre-step RSS, blocks >= 64 KiB mmapped (see docstring)"

    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return {
        "variant": variant,
        "seconds_per_step": statistics.median(times) if times else float("nan"),
        "peak_memory_mib": peak_mib,
        "memory_kind": memory_kind,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
    }


def _run_json(command: list[str], env: Mapping[str, str]) -> dict:
    completed = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variant", choices=VARIANTS, help="internal: run one variant")
    args = parser.parse_args(argv)

    if args.variant:
        result = run_variant(
            args.variant, args.batch_size, args.steps, args.device, args.image_size
        )
        print(json.dumps(result))
        return

    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant]
        command += ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
        command += ["--device", args.device]
        timing = _run_json(command + ["--steps", str(args.steps)], os.environ)
        if args.device == "cpu":
            memory_env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD_BYTES))
            memory = _run_json(command + ["--steps", "0"], memory_env)
            timing["peak_memory_mib"] = memory["peak_memory_mib"]
        results[variant] = timing

    sdpa, plain = results["sdpa"], results["plain"]
    print(
        f"ViT-S/14, {args.image_size}px, batch {args.batch_size}, forward+backward on "
        f"{args.device} (torch {sdpa['torch']}, {sdpa['threads']} threads), "
        f"median of {args.steps} steps"
    )
    print(f"memory = {sdpa['memory_kind']}")
    for name, result in (("sdpa", sdpa), ("plain", plain)):
        print(
            f"  {name:6s} {result['seconds_per_step']:8.3f} s/step   "
            f"{result['peak_memory_mib']:9.1f} MiB"
        )
    time_ratio = plain["seconds_per_step"] / sdpa["seconds_per_step"]
    memory_ratio = plain["peak_memory_mib"] / max(sdpa["peak_memory_mib"], 1e-9)
    print(f"  plain / sdpa: time x{time_ratio:.2f}, peak memory x{memory_ratio:.2f}")


if __name__ == "__main__":
    main()
