from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from curation.synth import SynthConfig
from curation.synth.cli import add_synth_arguments, main, run_synth, synth_config_from_args


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_synth_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_match_config() -> None:
    ns = parse(["--out", "x"])
    assert ns.out == Path("x")
    assert synth_config_from_args(ns) == SynthConfig()


def test_overrides() -> None:
    ns = parse(["--out", "x", "--seed", "3", "--n-pool", "50", "--n-near-duplicates", "7"])
    cfg = synth_config_from_args(ns)
    assert (cfg.seed, cfg.n_pool, cfg.n_near_duplicates) == (3, 50, 7)


def test_run_synth_and_main(tmp_path: Path) -> None:
    cfg = SynthConfig(
        seed=1, n_pool=20, n_near_duplicates=4, n_exact_duplicates=2, n_seed_per_class=2, n_eval=10,
        n_eval_copies_in_pool=3,
    )  # fmt: skip
    web = run_synth(tmp_path / "web", cfg, progress=False)
    assert web.read("pool").num_rows == cfg.n_served_pool
    argv = ["--out", str(tmp_path / "web"), "--seed", "1", "--n-pool", "20"]
    argv += ["--n-near-duplicates", "4", "--n-exact-duplicates", "2", "--n-seed-per-class", "2"]
    argv += ["--n-eval", "10", "--n-eval-copies-in-pool", "3", "--no-progress"]
    assert main(argv) == 0  # reuses the web just made


def test_main_reports_bad_config(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "w"), "--n-pool", "5"])  # fewer originals than copies
    assert info.value.code == 2
