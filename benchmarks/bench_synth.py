"""Generation speed of the synthetic web (the claim that the default ~2,500-image web takes well
under a minute on a 2-core machine lives here, not in the tests).

Each repeat generates the web into a fresh temporary folder (so nothing is reused) and prints its
seconds and images/s (served pool + eval + seed images, bad files not counted); the best repeat is
reported last.

Usage: ``python benchmarks/bench_synth.py [--seed 0] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.synth import SynthConfig, generate_synthetic_web  # noqa: E402


def n_images(cfg: SynthConfig) -> int:
    return cfg.n_served_pool + cfg.n_eval + cfg.n_seed_classes * cfg.n_seed_per_class


def time_generation(cfg: SynthConfig) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        started = time.perf_counter()
        generate_synthetic_web(Path(tmp) / "web", cfg, progress=False)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = SynthConfig(seed=args.seed)  # the default size, as the demo and the docs use it
    images = n_images(cfg)
    runs = []
    for repeat in range(args.repeats):
        seconds = time_generation(cfg)
        runs.append(seconds)
        print(
            f"repeat {repeat}: {images} images in {seconds:.1f} s = {images / seconds:.0f} images/s"
        )
    best = min(runs)
    summary = {"images": images, "best_seconds": round(best, 2)}
    summary["best_images_per_second"] = round(images / best, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
