"""Stored full size vs the resized download profile, on one synthetic web, side by side.

The profile (``examples/profiles/download_resized.yaml``) bounds the longer side at 800: 2.5 x the
largest model input (SSCD's 320). The synthetic web's images are 96-256 px and the demo's
descriptor reads them at 64 px, so 800 would change nothing here; the profile is run with its
side scaled to the same ratio of the demo's input (``--sides``; by default 160 = 2.5 x 64, the
profile's own ratio; 104 = 1.6 x 64, where 3:2 and 16:10 images still keep their shorter side at
the model's input but the web's more elongated ones (aspect ratios up to 2.7) do not; and 64, the
model's input itself, as a tight point). Everything else is the profile's.

Each variant runs the demo's flow (:func:`curation.jobs.demo.run_demo`: download, ingest with
exact and near-exact dedup, copy-descriptor embeddings, planted-copy micro-AP, copy dedup) on the
same web (same seed) in its own run folder, without curation and pretraining. The descriptor is
trained once, on the full-size download, and calibrated once; every resized variant embeds
with that same checkpoint (copied into its run folder, where the demo finds it and skips
training), so the differences come from the stored bytes alone.

Printed per variant:

* stored bytes: the downloaded images' bytes (``download/_encoded`` sizes), total and per image;
* decode: ms per image of the unique images, best of ``--repeats`` passes alternating between
  variants; ``full`` as ingest decodes (every pixel), ``model`` as the embed stage's workers do
  (reduced JPEG decode to the descriptor's input, then its resize);
* embed images/s: the embed stage's own rows over its seconds (model-bound on a CPU);
* micro-AP of the planted copies left after exact and near-exact dedup (their count too: a resize
  may change what pHash catches), recall at precision 0.9; micro-AP again on the same images for
  every variant (those all of them kept), the like-for-like figure; dedup pair precision and
  recall of the whole chain (exact, near-exact, copy) against the planted copies.

Usage: ``python benchmarks/bench_resized_download.py [--n-pool 500] [--sides 104,64]
[--descriptor-steps 200] [--work DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "examples" / "profiles" / "download_resized.yaml"


def demo_config(work: Path, name: str, side: int | None, args: argparse.Namespace):
    """The demo's config for one variant: the profile (at ``side``) or the plain defaults."""
    from curation.config import load_config
    from curation.jobs.config import CurationConfig

    overrides = [
        f"name={name}",
        f"runs_dir={work}",
        f"synth.n_pool={args.n_pool}",
        f"synth.seed={args.seed}",
        # The demo's planted copies, as many as a small pool allows.
        f"synth.n_near_duplicates={min(200, args.n_pool, args.tuning_pool)}",
        f"synth.n_exact_duplicates={min(40, args.n_pool, args.tuning_pool)}",
        "demo.curate=false",
        "demo.pretrain=false",
        "demo.decontaminate=false",
        f"demo.descriptor.max_steps={args.descriptor_steps}",
        f"demo.tuning_pool={args.tuning_pool}",
    ]
    files = []
    if side is not None:
        files = [PROFILE]
        overrides.append(f"download.image_size={side}")
    return load_config(CurationConfig, files, overrides)


def stored_bytes(cfg) -> tuple[int, int]:
    """Bytes and count of the downloaded images, as img2dataset stored them."""
    from curation.download.config import DownloadLayout

    total = count = 0
    for part in DownloadLayout(cfg.run_dir.stage("download").path).encoded_parts():
        sizes = pq.read_table(part, columns=["source_size"])["source_size"].to_pylist()
        total += sum(sizes)
        count += len(sizes)
    return total, count


def unique_blobs(cfg) -> list[bytes]:
    """The bytes of every unique image (what the embed stage reads; local run folders only)."""
    from curation.jobs.ingest import unique_image_shards

    blobs = []
    for part in unique_image_shards(cfg):
        table = pq.read_table(part, columns=["source_file", "source_offset", "source_size"])
        for path, offset, size in zip(*(table[c].to_pylist() for c in table.column_names)):
            with open(cfg.run_dir.root / path, "rb") as fh:  # run-relative (or absolute)
                fh.seek(offset)
                blobs.append(fh.read(size))
    return blobs


def decode_ms(blobs: list[bytes], prep) -> tuple[float, float]:
    """Milliseconds per image: decoding every pixel, and the embed workers' reduced decode."""
    from curation.imaging import DEFAULT_MAX_PIXELS, decode_rgb
    from curation.models.preprocess import decode_floor, image_to_uint8

    start = time.perf_counter()
    for data in blobs:
        decode_rgb(data, DEFAULT_MAX_PIXELS)
    full = time.perf_counter() - start
    start = time.perf_counter()
    for data in blobs:
        image_to_uint8(decode_rgb(data, DEFAULT_MAX_PIXELS, draft_size=decode_floor(prep)), prep)
    model = time.perf_counter() - start
    return 1000 * full / len(blobs), 1000 * model / len(blobs)


def common_copy_detection(results: dict[str, dict]) -> dict[str, dict]:
    """Micro-AP per variant on the same images and pairs: the unique images every variant kept
    (a resize may change what near-exact dedup catches, and so which copies are left)."""
    from curation.eval.copy_detection import evaluate_copy_detection, synthetic_copy_pairs
    from curation.jobs.ingest import unique_image_shards
    from curation.readers.embeddings import read_embeddings
    from curation.synth import SynthWeb

    per_variant = {}
    for name, r in results.items():
        cfg = r["cfg"]
        keys, matrix = read_embeddings(cfg.run_dir.stage("embed_sscd").outputs())
        urls = pq.read_table(unique_image_shards(cfg), columns=["key", "url"])
        synth_key = dict(
            zip(urls["key"].to_pylist(), (Path(u).stem for u in urls["url"].to_pylist()))
        )
        per_variant[name] = ([synth_key[k] for k in keys], matrix)
    common = set.intersection(*(set(keys) for keys, _ in per_variant.values()))
    web = SynthWeb.load(next(iter(results.values()))["cfg"].run_dir.root / "synth")
    pairs = {p for p in synthetic_copy_pairs(web.read("pool")) if set(p) <= common}
    out = {}
    for name, (keys, matrix) in per_variant.items():
        rows = [i for i, k in enumerate(keys) if k in common]
        report = evaluate_copy_detection([keys[i] for i in rows], matrix[rows], pairs)
        out[name] = {"images": len(rows), **asdict(report)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-pool", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sides", default="160,104,64", help="the profile's image_size per variant"
    )
    parser.add_argument("--descriptor-steps", type=int, default=200)
    parser.add_argument("--tuning-pool", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="kept; default: a temp folder")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

    from curation.jobs.demo import run_demo
    from curation.models.descriptor import load_descriptor_checkpoint
    from curation.models.preprocess import Preprocessing

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_resized_"))
    variants = [("full", None)] + [(f"side{s}", int(s)) for s in args.sides.split(",")]
    results: dict[str, dict] = {}
    checkpoint = None
    for name, side in variants:
        cfg = demo_config(work, name, side, args)
        if checkpoint is not None:  # the full-size run's descriptor, already calibrated
            target = cfg.run_dir.root / "descriptor" / "descriptor.pt"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint, target)
        start = time.perf_counter()
        stats = run_demo(cfg).stats
        checkpoint = checkpoint or cfg.run_dir.root / "descriptor" / "descriptor.pt"
        size, count = stored_bytes(cfg)
        embed = stats["embed_sscd"]
        results[name] = {
            "side": side,
            "seconds": time.perf_counter() - start,
            "stored_bytes": size,
            "stored_images": count,
            "embed_images_per_s": embed["rows_in"] / embed["seconds"],
            "copy": stats["copy_detection"],
            "dedup": stats.get("dedup_quality", {}),
            "cfg": cfg,
        }
        print(f"{name}: {results[name]['seconds']:.0f} s", flush=True)

    _, meta = load_descriptor_checkpoint(checkpoint)
    prep = Preprocessing(size=meta["inference"]["size"], resize=meta["inference"]["resize"])
    common = common_copy_detection(results)
    blobs = {name: unique_blobs(r["cfg"]) for name, r in results.items()}
    timings: dict[str, list] = {name: [] for name in results}
    for _ in range(args.repeats):  # alternating, so drift on a shared machine hits every variant
        for name in results:
            timings[name].append(decode_ms(blobs[name], prep))

    print(
        f"\nweb: n_pool {args.n_pool}, seed {args.seed}; descriptor: {args.descriptor_steps} "
        f"steps on the full-size pool, read at {prep.size} px ({prep.resize}); "
        f"load {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'variant':<9} {'stored MiB':>10} {'KiB/img':>8} {'decode full':>11} "
        f"{'decode model':>12} {'embed img/s':>11} {'µAP':>6} {'R@P90':>6} {'pairs':>5} "
        f"{'µAP same':>8} {'dedup P':>7} {'dedup R':>7}"
    )
    first = next(iter(common.values()))
    print(
        f"µAP same: every variant on the {first['n_true_pairs']} planted pairs among the "
        f"{first['images']} unique images all variants kept"
    )
    print(header)
    summary = {}
    for name, r in results.items():
        full = min(t[0] for t in timings[name])
        model = min(t[1] for t in timings[name])
        copy, dedup = r["copy"], r["dedup"]
        print(
            f"{name:<9} {r['stored_bytes'] / 2**20:>10.2f} "
            f"{r['stored_bytes'] / r['stored_images'] / 1024:>8.1f} {full:>9.2f}ms "
            f"{model:>10.2f}ms {r['embed_images_per_s']:>11.1f} {copy.get('micro_ap', 0):>6.3f} "
            f"{copy.get('recall_at_p90', 0):>6.3f} {copy['n_true_pairs']:>5} "
            f"{common[name]['micro_ap']:>8.3f} "
            f"{dedup.get('pair_precision', 0):>7.3f} {dedup.get('pair_recall', 0):>7.3f}"
        )
        summary[name] = {
            **{k: v for k, v in r.items() if k != "cfg"},
            "decode_full_ms": full,
            "decode_model_ms": model,
            "copy_same_images": common[name],
        }
    (work / "bench_resized_download.json").write_text(json.dumps(summary, indent=2))
    print(f"\nrun folders and bench_resized_download.json in {work}")


if __name__ == "__main__":
    main()
