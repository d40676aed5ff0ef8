"""``lvd synth``: generate a synthetic web. A thin wrapper over :func:`run_synth`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from curation.synth.web import SynthConfig, SynthWeb, generate_synthetic_web

logger = logging.getLogger(__name__)

_HELP = {
    "seed": "random seed; the same seed gives a byte-identical web",
    "n_pool": "pool originals (the served pool also holds the planted copies)",
    "n_classes": "visually distinct classes",
    "n_near_duplicates": "planted near-duplicates of pool originals",
    "n_exact_duplicates": "planted byte-identical copies of pool originals",
    "n_seed_classes": "classes the seed dataset is drawn from",
    "n_seed_per_class": "seed images per seed class",
    "n_eval": "evaluation-set images",
    "n_eval_copies_in_pool": "evaluation images planted (transformed) in the pool",
}


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--out`` and one ``--<field>`` option per SynthConfig field (defaults from it)."""
    parser.add_argument("--out", type=Path, required=True, help="directory to write the web into")
    for field in dataclasses.fields(SynthConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=field.name,
            type=int,
            default=field.default,
            metavar="N",
            help=f"{_HELP.get(field.name, field.name)} (default: {field.default})",
        )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def synth_config_from_args(ns: argparse.Namespace) -> SynthConfig:
    """The SynthConfig named by parsed ``add_synth_arguments`` options."""
    return SynthConfig(
        **{field.name: getattr(ns, field.name) for field in dataclasses.fields(SynthConfig)}
    )


def run_synth(out: Path, cfg: SynthConfig, *, progress: bool | None = None) -> SynthWeb:
    """Generate (or reuse) the synthetic web for ``cfg`` in ``out`` and log what it holds."""
    web = generate_synthetic_web(Path(out), cfg, progress=progress)
    logger.info(
        "synthetic web ready at %s: pool %d files in %d classes, seed %d, eval %d, bad files in %s",
        web.root,
        cfg.n_served_pool,
        cfg.n_classes,
        cfg.n_seed_classes * cfg.n_seed_per_class,
        cfg.n_eval,
        web.bad_dir,
    )
    return web


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m curation.synth.cli``) until ``lvd synth`` is wired."""
    parser = argparse.ArgumentParser(prog="lvd synth", description=__doc__)
    add_synth_arguments(parser)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = synth_config_from_args(ns)
    except ValueError as err:
        parser.error(str(err))
    run_synth(ns.out, cfg, progress=False if ns.no_progress else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
