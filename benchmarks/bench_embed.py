"""Embed-stage throughput against a naive loop, and (on a GPU) against the model's compute limit.

Side by side in one run, on the same JPEGs and the same model settings:
- ``stage``: the embed stage over ENCODED_IMAGE shards (decode/resize in worker processes overlapped
  with the forward passes, normalisation on the device, deferred copies back).
- ``naive``: decode then forward, one batch at a time, in one thread (on the GPU over the first
  3072 of the same images: rates are compared, and the naive loop is slow).
- ``forward``: the model alone on random tensors already on the device (the compute limit), as
  many images as the stage (CPU) or 20 batches (GPU) per round.

The three alternate in ``--repeats`` rounds; rates are the best round of each (the median ratio
of stage to forward is printed beside).

CPU (stage / naive >= 1.0; stage / forward >= 0.95 for issue 16's model, SSCD ResNet-50 at
288 px):
    python benchmarks/bench_embed.py --arch resnet50 --size 288 --repeats 3
    python benchmarks/bench_embed.py  (ResNet-18 at 160 px: a light model, decode shows more)
GPU (SSCD ResNet-50 at 288 px, bf16):
    python benchmarks/bench_embed.py --device cuda --arch resnet50 --size 288 --dtype bf16
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.imaging import decode_rgb  # noqa: E402
from curation.io import write_parquet_atomic  # noqa: E402
from curation.models.preprocess import image_to_uint8, normalize_batch  # noqa: E402
from curation.stages.embed import EmbedConfig, embed_stage_spec  # noqa: E402
from schemas import ENCODED_IMAGE_SCHEMA  # noqa: E402


def make_jpeg(seed: int) -> bytes:
    """A web-sized photo-like JPEG: smooth colour fields plus noise, 320-640 px a side."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(320, 641, size=2))
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_shards(n_images: int, n_unique: int, out: Path, rows_per_shard: int) -> list[Path]:
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        unique = list(pool.map(make_jpeg, range(n_unique)))
    shards = []
    for start in range(0, n_images, rows_per_shard):
        rows = range(start, min(n_images, start + rows_per_shard))
        table = pa.table(
            {
                "key": [f"img-{i:07d}" for i in rows],
                "url": pa.nulls(len(rows), pa.string()),
                "image": [unique[i % n_unique] for i in rows],
                "source_file": pa.nulls(len(rows), pa.string()),
                "source_offset": pa.nulls(len(rows), pa.int64()),
                "source_size": pa.nulls(len(rows), pa.int64()),
            },
            schema=ENCODED_IMAGE_SCHEMA,
        )
        path = out / f"part-{start // rows_per_shard:05d}.parquet"
        write_parquet_atomic(path, table, ENCODED_IMAGE_SCHEMA)
        shards.append(path)
    return shards


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_stage_over(stage, shards: list[Path]) -> tuple[int, float]:
    rows = 0
    start = time.perf_counter()
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=stage.batch_size):
            rows += stage(pa.Table.from_batches([batch])).num_rows
    synchronize(stage.embedder.device)
    return rows, time.perf_counter() - start


def run_naive(runner, shards: list[Path], batch_size: int, limit: int) -> tuple[int, float]:
    """Decode then forward, one batch at a time, in the calling thread (first ``limit`` images)."""
    prep = runner.embedder.preprocessing
    rows = 0
    start = time.perf_counter()
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size, columns=["image"]):
            arrays = [image_to_uint8(decode_rgb(d), prep) for d in batch.column(0).to_pylist()]
            pixels = torch.from_numpy(np.stack(arrays)).to(runner.device)
            x = normalize_batch(pixels, prep, channels_last=runner.channels_last)
            with (
                torch.inference_mode(),
                torch.autocast(
                    runner.device.type,
                    dtype=runner.dtype,
                    enabled=runner.dtype != torch.float32,
                ),
            ):
                runner.model(x).float().cpu()
            rows += len(arrays)
            if rows >= limit:
                synchronize(runner.device)
                return rows, time.perf_counter() - start
    synchronize(runner.device)
    return rows, time.perf_counter() - start


def run_forward(runner, batch_size: int, size: int, iterations: int) -> float:
    memory_format = torch.channels_last if runner.channels_last else torch.contiguous_format
    x = torch.randn(batch_size, 3, size, size, device=runner.device)
    x = x.contiguous(memory_format=memory_format)
    autocast = torch.autocast(
        runner.device.type, dtype=runner.dtype, enabled=runner.dtype != torch.float32
    )
    with torch.inference_mode(), autocast:
        for _ in range(3):
            runner.model(x)
        synchronize(runner.device)
        start = time.perf_counter()
        for _ in range(iterations):
            runner.model(x)
        synchronize(runner.device)
    return batch_size * iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--images", type=int, default=None, help="default: 192 CPU, 16384 GPU")
    parser.add_argument("--unique", type=int, default=None, help="distinct JPEGs (default 1024)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 CPU, 256 GPU")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode workers (default: the stage's, from the machine)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds")
    parser.add_argument("--backend", default="auto", choices=["auto", "process", "thread"])
    parser.add_argument(
        "--naive-images",
        type=int,
        default=None,
        help="images the (slow) naive loop times, from the start of the same shards "
        "(default: all on CPU, 3072 on GPU)",
    )
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    n_images = args.images or (16384 if gpu else 192)
    batch_size = args.batch_size or (256 if gpu else 32)
    workers = args.workers  # None: the stage's choice from the machine (decode_workers)
    torch.backends.cudnn.benchmark = True
    config = EmbedConfig(
        model=f"sscd_{args.arch}",
        input="encoded_image",
        size=args.size,
        resize="square",
        device=args.device,
        dtype={"fp32": "float32", "bf16": "bf16", "fp16": "fp16"}[args.dtype],
        batch_size=batch_size,
        rows_per_call=batch_size * 32,
        num_workers=workers,
        decode_backend=args.backend,
    )
    with tempfile.TemporaryDirectory() as tmp:
        unique = min(n_images, args.unique or 1024)
        shards = write_shards(n_images, unique, Path(tmp) / "timed", batch_size * 32)
        warmup = write_shards(batch_size * 2, unique, Path(tmp) / "warmup", batch_size * 2)
        spec = embed_stage_spec(config)
        stage = spec.build()
        runner = stage.embedder
        workers = runner.options.num_workers
        # Warm-up (cudnn autotuning, allocator, thread pool), untimed.
        run_stage_over(stage, warmup)
        run_naive(runner, warmup, batch_size, batch_size * 2)
        n_naive = args.naive_images or (3072 if gpu else n_images)
        results: dict[str, list[float]] = {"stage": [], "naive": [], "forward": []}
        forward_batches = max(3, n_images // batch_size) if not gpu else 20
        for _ in range(args.repeats):  # alternate so drift on a shared machine hits all three
            rows, seconds = run_stage_over(stage, shards)
            results["stage"].append(rows / seconds)
            rows, seconds = run_naive(runner, shards, batch_size, n_naive)
            results["naive"].append(rows / seconds)
            results["forward"].append(run_forward(runner, batch_size, args.size, forward_batches))
        runner.close()
    best = {name: max(rates) for name, rates in results.items()}
    median = {name: statistics.median(rates) for name, rates in results.items()}
    stage_rate, naive_rate, forward = best["stage"], best["naive"], best["forward"]
    rounds = {name: [round(r, 1) for r in rates] for name, rates in results.items()}
    device_name = torch.cuda.get_device_name() if gpu else f"cpu x{os.cpu_count()}"
    print(
        f"device={device_name} model=sscd_{args.arch} size={args.size} dtype={args.dtype} "
        f"batch={batch_size} decode_workers={workers} ({args.backend}) images={n_images} "
        f"torch_threads={torch.get_num_threads()}"
    )
    print(f"embed stage      : {stage_rate:9.1f} images/s  (rounds: {rounds['stage']})")
    print(f"naive loop       : {naive_rate:9.1f} images/s  (rounds: {rounds['naive']})")
    print(f"stage / naive    : {stage_rate / naive_rate:9.2f}")
    print(
        f"pure forward     : {forward:9.1f} images/s  (random tensors on the device; "
        f"rounds: {rounds['forward']})"
    )
    print(
        f"stage / forward  : {stage_rate / forward:9.2f}  (best of each; medians: "
        f"{median['stage'] / median['forward']:.2f})"
    )


if __name__ == "__main__":
    main()
