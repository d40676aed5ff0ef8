"""``lvd --help`` lists only subcommands that work: each one listed is run here for real."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from curation.cli import build_parser, main
from curation.commands import COMMANDS

SMALL = [
    "synth.n_pool=40",
    "synth.n_near_duplicates=4",
    "synth.n_exact_duplicates=2",
    "synth.n_eval=6",
    "synth.n_eval_copies_in_pool=2",
    "synth.n_seed_per_class=3",
]


def _listed_subcommands() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "curation.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    return [name for name in COMMANDS if f"    {name} " in out]


def test_help_lists_every_registered_command():
    assert _listed_subcommands() == COMMANDS


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", f"runs_dir={tmp_path}", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "demo run finished" in out
    decode = json.loads((tmp_path / "demo" / "decode" / "stats.json").read_text())
    # 40 originals + 4 near + 2 exact + 2 eval copies, plus 8 bad files.
    assert decode["rows_in"] == 56
    assert decode["status_ok"] == 56 - 4  # truncated, empty, html, huge are rejected
    assert (tmp_path / "demo" / "config.yaml").is_file()


def test_synth_writes_a_web(tmp_path):
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path / "web"),
                "--n-pool",
                "12",
                "--n-near-duplicates",
                "2",
                "--n-exact-duplicates",
                "1",
                "--n-eval",
                "4",
                "--n-eval-copies-in-pool",
                "1",
                "--n-seed-per-class",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
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


def test_every_listed_command_is_exercised_here():
    exercised = {"demo", "synth", "decode"}
    missing = set(COMMANDS) - exercised
    assert not missing, f"subcommands without a test that runs them: {missing}"
    assert build_parser().prog == "lvd"


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_help(name):
    result = subprocess.run(
        [sys.executable, "-m", "curation.cli", name, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "usage: lvd " + name in result.stdout
