"""Synthetic webs for these tests: a small one that plants every kind of copy (fast checks) and one
at the default size (statistics; its generation speed is measured in benchmarks/bench_synth.py). Separate from the suite-wide ``small_web``, whose config
other packages tune for their own needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.synth import SynthConfig, SynthWeb, generate_synthetic_web

SMALL_CONFIG = SynthConfig(
    seed=7,
    n_pool=120,
    n_classes=10,
    n_near_duplicates=30,
    n_exact_duplicates=6,
    n_seed_classes=3,
    n_seed_per_class=5,
    n_eval=20,
    n_eval_copies_in_pool=10,
)


@pytest.fixture(scope="session")
def small_synth_web(tmp_path_factory: pytest.TempPathFactory) -> SynthWeb:
    return generate_synthetic_web(tmp_path_factory.mktemp("synth") / "small", SMALL_CONFIG)


@pytest.fixture(scope="session")
def default_web(tmp_path_factory: pytest.TempPathFactory) -> SynthWeb:
    out: Path = tmp_path_factory.mktemp("synth") / "default"
    return generate_synthetic_web(out, SynthConfig(seed=0), progress=False)
