"""Embed-stage throughput reading images from a local S3 server against local disk.

Side by side in one run, on the same JPEGs in the same webdataset tars, the same ENCODED_IMAGE
index shards (bytes left in the tars: each image is one ranged read) and the same model settings:
- ``disk``: inputs and the run folder on local disk;
- ``s3``: inputs copied to an S3-compatible server on localhost (moto, in its own process so it does
  not share this one's interpreter), and the run folder there too (``runs_dir=s3://...``).
Each round embeds every shard into a fresh run folder through ``run_embed`` on the local engine
(decode workers read the bytes, the stage writes its parts and markers), alternating disk and s3 so
drift on a shared machine hits both. A second table times reading the bytes alone (no model).

moto stands in for a store: it answers from memory on loopback, so the ratio shows the cost of the
object-store path (HTTP requests, signing, one ranged GET per image) rather than a network's.

    python benchmarks/bench_storage.py                   # 384 images, sscd_resnet18 at 160 px
    python benchmarks/bench_storage.py --images 1024 --workers 4
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_embed import make_jpeg  # noqa: E402
from curation import storage  # noqa: E402
from curation.engines import get_engine  # noqa: E402
from curation.jobs.config import CurationConfig  # noqa: E402
from curation.jobs.embed import run_embed  # noqa: E402
from curation.readers.image_bytes import image_bytes_loaders  # noqa: E402
from curation.readers.input_shards import index_webdataset_tars  # noqa: E402
from curation.stages.embed import EmbedConfig  # noqa: E402

BUCKET = "lvd-bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def write_tars(folder: Path, n_images: int, per_tar: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, n_images, per_tar):
        with tarfile.open(folder / f"{first // per_tar:05d}.tar", "w") as tar:
            for i in range(first, min(n_images, first + per_tar)):
                data = make_jpeg(i)
                info = tarfile.TarInfo(f"img-{i:07d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_store() -> subprocess.Popen:
    """moto's S3 server in a child process; this process's environment pointed at it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while True:
        try:
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            return server
        except Exception:  # noqa: BLE001 - not answering yet
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("the moto S3 server did not start") from None
            time.sleep(0.3)


def embed_round(runs_dir: str, shards: list, config: EmbedConfig) -> tuple[int, float]:
    cfg = CurationConfig(name=f"round-{uuid.uuid4().hex[:8]}", runs_dir=runs_dir, embed=config)
    start = time.perf_counter()
    with get_engine("local", progress=False) as engine:
        stats = run_embed(cfg, engine, shards)
    return stats["rows_out"], time.perf_counter() - start


def read_round(shards: list) -> tuple[int, float]:
    start = time.perf_counter()
    n = 0
    for shard in shards:
        for load in image_bytes_loaders(storage.read_table(shard)):
            load()
            n += 1
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--per-tar", type=int, default=128, help="images per tar (and shard)")
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="decode processes")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds")
    args = parser.parse_args()
    config = EmbedConfig(
        model=f"sscd_{args.arch}",
        size=args.size,
        resize="square",
        device="cpu",
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    server = start_store()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_tars(root / "tars", args.images, args.per_tar)
            store = f"s3://{BUCKET}/bench"
            storage.copy_tree(root / "tars", f"{store}/tars")
            tars = {
                "disk": sorted((root / "tars").glob("*.tar")),
                "s3": storage.list_files(f"{store}/tars", "*.tar"),
            }
            places = {"disk": str(root / "runs"), "s3": f"{store}/runs"}
            shards = {
                name: index_webdataset_tars(tars[name], storage.join(places[name], "index"))
                for name in places
            }
            # Warm-up (model load, worker start, first connections), untimed.
            for name in places:
                embed_round(places[name], shards[name][:1], config)
            embed: dict[str, list[float]] = {name: [] for name in places}
            read: dict[str, list[float]] = {name: [] for name in places}
            for _ in range(args.repeats):
                for name in places:
                    rows, seconds = embed_round(places[name], shards[name], config)
                    embed[name].append(rows / seconds)
                    n, seconds = read_round(shards[name])
                    read[name].append(n / seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    best = {name: max(rates) for name, rates in embed.items()}
    best_read = {name: max(rates) for name, rates in read.items()}
    print(
        f"cpu x{os.cpu_count()} model=sscd_{args.arch} size={args.size} batch={args.batch_size} "
        f"decode_workers={args.workers} images={args.images} tars of {args.per_tar}"
    )
    for name in places:
        rounds = [round(r, 1) for r in embed[name]]
        print(f"embed stage, {name:4} : {best[name]:9.1f} images/s  (rounds: {rounds})")
    print(f"embed s3 / disk   : {best['s3'] / best['disk']:9.2f}")
    for name in places:
        rounds = [round(r, 1) for r in read[name]]
        print(f"bytes only, {name:4} : {best_read[name]:9.1f} images/s  (rounds: {rounds})")
    print(f"read s3 / disk    : {best_read['s3'] / best_read['disk']:9.2f}")


if __name__ == "__main__":
    main()
