"""``lvd --help`` lists only subcommands that work: each one listed is run by a test for real."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.cli import build_parser, main

TESTS = Path(__file__).resolve().parents[1]
SMALL = [
    "synth.n_pool=40",
    "synth.n_near_duplicates=12",
    "synth.n_exact_duplicates=2",
    "synth.n_eval=6",
    "synth.n_eval_copies_in_pool=2",
    "synth.n_seed_per_class=3",
    "download.processes_count=1",
    "download.thread_count=8",
    "demo.descriptor.time_budget_s=4",
]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_help_lists_exactly_the_registered_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "curation.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    listed = re.findall(r"^    (\S+)\s", out, flags=re.MULTILINE)
    assert listed == _subcommands()
    assert {"demo", "synth", "decode"} <= set(listed)


def test_every_listed_subcommand_is_run_by_some_test():
    sources = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))
    for name in _subcommands():
        pattern = rf'main\(\s*\[\s*(?:\*\w+,\s*)?"{re.escape(name)}"'
        assert re.search(pattern, sources), f"no test runs `lvd {name}` through curation.cli.main"


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", f"runs_dir={tmp_path}", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "demo run finished" in out
    run = tmp_path / "demo"
    download = json.loads((run / "download" / "stats.json").read_text())
    ingest = json.loads((run / "ingest" / "stats.json").read_text())
    # 40 originals + 12 near + 2 exact + 2 eval copies + 8 bad files are served; 404s and the
    # refused port fail.
    assert download["status_success"] == 64
    assert download["status_failed_to_download"] >= 2
    assert ingest["status_ok"] == 64 - 4  # truncated, empty, html, huge are rejected
    unique = pq.read_table(list((run / "unique_images").glob("*.parquet")))
    assert 40 <= unique.num_rows < 60  # exact copies and re-encodes removed, originals kept
    embed = json.loads((run / "embed_sscd" / "stats.json").read_text())
    embedded = pq.read_table(list((run / "embed_sscd").glob("*.parquet")))
    assert embed["rows_out"] == embedded.num_rows == unique.num_rows
    assert sorted(embedded.column("key").to_pylist()) == sorted(unique.column("key").to_pylist())
    report = embed["copy_detection"]
    assert report["n_true_pairs"] > 0  # crops, flips, pads survive near-exact dedup
    assert 0.0 <= report["micro_ap"] <= 1.0
    assert report["n_true_pairs_found"] <= report["n_true_pairs"]
    assert "copy_detection" in out

    # A rerun resumes: same port, same URL list, every stage already complete and left as it is.
    outputs = sorted(run.rglob("*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in outputs]
    assert main(["demo", f"runs_dir={tmp_path}", *SMALL]) == 0
    assert sorted(run.rglob("*.parquet")) == outputs
    assert [p.stat().st_mtime_ns for p in outputs] == mtimes
    assert (run / "config.yaml").is_file()


def test_synth_writes_a_web(tmp_path):
    args = ["--n-pool", "12", "--n-near-duplicates", "2", "--n-exact-duplicates", "1"]
    args += ["--n-eval", "4", "--n-eval-copies-in-pool", "1", "--n-seed-per-class", "2"]
    assert main(["synth", "--out", str(tmp_path / "web"), *args, "--no-progress"]) == 0
    pool = pq.read_table(tmp_path / "web" / "ground_truth" / "pool.parquet")
    assert pool.num_rows == 12 + 2 + 1 + 1


def test_decode_on_a_folder(small_web, tmp_path, capsys):
    assert (
        main(["decode", "--images", str(small_web.bad_dir), f"runs_dir={tmp_path}", "name=bad"])
        == 0
    )
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows_in"] == 8
    assert stats["status_rejected_too_large"] == 1


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["decode", "--input", str(tmp_path), f"runs_dir={tmp_path}"]) == 2
    assert "no .parquet shards" in capsys.readouterr().err
    assert main(["demo", "engine.nme=ray"]) == 2
    assert "unknown config key" in capsys.readouterr().err


@pytest.mark.parametrize("name", _subcommands())
def test_subcommand_help(name):
    result = subprocess.run(
        [sys.executable, "-m", "curation.cli", name, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "usage: lvd " + name in result.stdout
