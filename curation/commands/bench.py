"""``lvd bench copydetect``: the real-image copy-detection benchmark (built once into the cache),
scored for descriptor checkpoints, an untrained network and pHash; optionally stores a calibrated
copy threshold in a checkpoint (:mod:`curation.eval.copydetect_bench`)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from curation.cli import group_parser_class
from curation.commands.common import parse_sizes


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks the project owns")
    benches = parser.add_subparsers(
        dest="bench", required=True, metavar="BENCHMARK", parser_class=group_parser_class("bench")
    )
    copydetect = benches.add_parser(
        "copydetect",
        help="real-image copy detection: pair micro-AP, recall at precision, look-alikes",
        description="Build (once, into the cache) and score the real-image copy-detection "
        "benchmark. With no method, scores pHash and the untrained resnet18.",
    )
    copydetect.add_argument(
        "--cache", type=Path, help="cache folder (default: $LVD_CACHE or ~/.cache/lvd)"
    )
    copydetect.add_argument("--split", choices=("heldout", "tuning"), default="heldout")
    copydetect.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a descriptor checkpoint of lvd train-descriptor (repeatable)",
    )
    copydetect.add_argument(
        "--untrained", metavar="ARCH", help="also score the untrained network of this arch"
    )
    copydetect.add_argument("--phash", action="store_true", help="also score pHash")
    copydetect.add_argument(
        "--scales", type=parse_sizes, default=(), help="multi-scale inference sizes, e.g. 128,160"
    )
    copydetect.add_argument(
        "--store-calibration",
        action="store_true",
        help="choose the score kind and threshold on the tuning split and store them in each "
        "--checkpoint (then report them on held-out)",
    )
    copydetect.add_argument(
        "--verify",
        action="store_true",
        help="also score each descriptor with lvd dedup's pixel check (dedup.verify) of every "
        "kNN pair: <score>+verify rows, the score raised by the check's margin where it passes",
    )
    copydetect.add_argument("--target-precision", type=float, default=0.95)
    copydetect.add_argument(
        "--pool-size",
        type=int,
        help="with --store-calibration: the number of images the threshold will dedup; false "
        "pairs grow with its square, so a larger pool needs a higher threshold for the same "
        "precision (default: a pool the size of the tuning split)",
    )
    copydetect.add_argument(
        "--source",
        choices=("packages", "debian"),
        help="pictures: debian (Debian art packages via apt-get, the default where apt-get "
        "exists) or packages (the 19 pictures of installed wheels, offline)",
    )
    copydetect.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    copydetect.add_argument("--num-workers", type=int, default=2, help="decode workers")
    copydetect.add_argument("--json", type=Path, help="also write the report as JSON here")
    copydetect.set_defaults(func=run_copydetect_command)


def _choose_source(ns: argparse.Namespace, cache: Path) -> tuple[str, str]:
    from curation.eval.copydetect_bench import benchmark_root, is_built

    if ns.source:
        return ns.source, "as asked"
    if is_built(benchmark_root(cache, "debian")):
        return "debian", "already built in the cache"
    if shutil.which("apt-get") and shutil.which("dpkg-deb"):
        return "debian", "apt-get found"
    return "packages", "no apt-get: only the pictures of installed wheels"


def check_inputs(ns: argparse.Namespace) -> Path:
    """Refuse bad inputs before the benchmark is built; the cache folder."""
    from curation.commands.common import check_output_folder
    from curation.config import ConfigError
    from curation.eval.debian_pictures import default_cache
    from curation.models.descriptor import descriptor_archs, is_descriptor_checkpoint
    from curation.models.embedder import read_checkpoint

    if not 0 < ns.target_precision <= 1:
        raise ConfigError(f"--target-precision must be in (0, 1], got {ns.target_precision}")
    if ns.num_workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {ns.num_workers}")
    if ns.untrained is not None and ns.untrained not in descriptor_archs():
        raise ConfigError(
            f"--untrained {ns.untrained!r} is not a descriptor arch; one of {descriptor_archs()}"
        )
    if ns.store_calibration and not ns.checkpoint:
        raise ConfigError("--store-calibration needs a --checkpoint to store it in")
    if ns.pool_size is not None and (ns.pool_size < 1 or not ns.store_calibration):
        raise ConfigError("--pool-size needs --store-calibration and a count of images >= 1")
    for path in ns.checkpoint:
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} is a folder; give the .pt file")
        payload = read_checkpoint(path)  # CheckpointError (one line) when unreadable
        if not is_descriptor_checkpoint(payload):
            raise ConfigError(
                f"{path} is not an lvd descriptor checkpoint (lvd train-descriptor writes one)"
            )
        recorded = tuple(payload.get("inference", {}).get("scales", ()))
        if ns.store_calibration and ns.scales and tuple(ns.scales) != recorded:
            raise ConfigError(
                f"--store-calibration with --scales {ns.scales} but {path} records scales "
                f"{recorded}: the stored threshold would not match what lvd embed computes"
            )
        if ns.store_calibration:
            check_output_folder(path.parent, "checkpoint folder")
    cache = ns.cache if ns.cache is not None else default_cache()
    check_output_folder(cache, "--cache")
    if ns.json is not None:
        if ns.json.is_dir():
            raise ConfigError(f"--json {ns.json} is a folder; give a file, e.g. {ns.json}/r.json")
        check_output_folder(ns.json.parent, "--json folder")
    return cache


COLUMNS = (
    ("pair_micro_ap", "pair uAP"),
    ("copy_original_micro_ap", "copy-orig uAP"),
    ("recall_at_p90", "R@P90"),
    ("recall_at_p95", "R@P95"),
    ("lookalike_in_knn", "look-alikes kNN"),
    ("lookalike_above_threshold", "look-alikes >P95"),
)


def format_table(results: list[dict]) -> str:
    width = max([len(r["method"]) for r in results] + [6])
    head = f"{'method':<{width}}  {'score':<14}" + "".join(f"  {t:>{len(t)}}" for _, t in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in results:
        cells = "".join(f"  {r[key]:>{len(title)}.3f}" for key, title in COLUMNS)
        lines.append(f"{r['method']:<{width}}  {r['score']:<14}{cells}")
    return "\n".join(lines)


def run_copydetect_command(ns: argparse.Namespace) -> int:
    import tempfile

    from curation.eval.copydetect_bench import (
        Method,
        build_benchmark,
        manifest,
        run_copydetect,
        untrained_checkpoint,
    )

    cache = check_inputs(ns)
    source, why = _choose_source(ns, cache)
    print(f"source: {source} ({why})")
    started = time.monotonic()
    root = build_benchmark(cache, source)
    built = manifest(root)
    print(f"benchmark: {root} (built in {built['build_seconds']} s)")
    print(f"train images (unedited tuning pictures): {root / 'train_images'}")
    for split, counts in built["splits"].items():
        print(
            f"  {split}: {counts['pictures']} pictures, {counts['images']} images, "
            f"{counts['lookalike_pairs']} look-alike pairs; by package {counts['by_package']}; "
            f"by licence {counts['by_licence']}"
        )
    methods = [Method(p.name, p, ns.store_calibration) for p in ns.checkpoint]
    untrained = ns.untrained
    phash = ns.phash
    if not methods and untrained is None and not phash:
        untrained, phash = "resnet18", True
    with tempfile.TemporaryDirectory() as tmp:
        if untrained is not None:
            methods.append(Method(f"untrained-{untrained}", untrained_checkpoint(untrained, tmp)))
        if phash:
            methods.append(Method("phash"))
        evaluated = time.monotonic()
        report = run_copydetect(
            root,
            ns.split,
            methods,
            scales=tuple(ns.scales),
            target_precision=ns.target_precision,
            device=ns.device,
            num_workers=ns.num_workers,
            pool_images=ns.pool_size,
            verify=ns.verify,
        )
    report.update(
        source=source,
        counts=built["splits"],
        build_seconds=built["build_seconds"],
        eval_seconds=round(time.monotonic() - evaluated, 1),
        scales=list(ns.scales),
    )
    print(f"\n{ns.split} split" + (f", scales {ns.scales}" if ns.scales else "") + ":")
    print(format_table(report["results"]))
    for entry in report["calibrations"]:
        stored = entry["stored"]
        if stored is None:
            print(f"{entry['method']}: no threshold reaches precision {ns.target_precision} on "
                  "tuning; nothing stored")  # fmt: skip
            continue
        held = entry["heldout"]
        print(
            f"{entry['method']}: stored {stored['kind']} > {stored['threshold']:.4f} "
            f"(chosen on tuning for precision {ns.target_precision}); on held-out: precision "
            f"{held['precision']:.3f}, recall {held['recall']:.3f}"
        )
    print(f"evaluated in {report['eval_seconds']} s (total {time.monotonic() - started:.0f} s)")
    if ns.json is not None:
        ns.json.write_text(json.dumps(report, indent=2))
    return 0
