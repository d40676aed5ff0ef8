"""A stage's progress bar counts rows, with their rate and the time left (curation.progress), and
the local engine draws one per stage."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli import main
from curation.progress import ENVIRONMENT, StageProgress, parquet_rows, progress_shown

# tqdm waits this long between redraws; a test sleeps past it to see an intermediate state.
REDRAW = 0.12


def _frames(text: str) -> list[str]:
    """The successive states of a bar written to a file (each redraw starts with a CR)."""
    return [frame.strip() for frame in text.split("\r") if frame.strip()]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_with_a_row_total_counts_rows_with_their_rate_and_eta():
    out = io.StringIO()
    with StageProgress("embed", total_rows=250, total_shards=3, shown=True, file=out) as bar:
        for rows in (100, 100, 50):
            time.sleep(REDRAW)
            bar.advance(rows)
    frames = _frames(out.getvalue())
    assert frames[0].startswith("embed:") and "0/250" in frames[0] and "0/3 shards" in frames[0]
    # An intermediate state: rows of the total, time elapsed < time left, a rate in rows/s.
    assert any(
        re.search(r" 100/250 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+rows/s, 1/3 shards]", f) for f in frames
    )
    assert re.search(r"100%.* 250/250 .*rows/s, 3/3 shards]", frames[-1])


def test_without_a_row_total_it_counts_shards_and_says_rows_per_second():
    out = io.StringIO()
    with StageProgress("dedup", total_shards=3, shown=True, file=out) as bar:
        for rows in (100, 100, 50):
            time.sleep(REDRAW)
            bar.advance(rows)
    last = _frames(out.getvalue())[-1]
    assert " 3/3 " in last and "250 rows, " in last
    rate = float(re.search(r"([\d.]+) rows/s", last).group(1))
    assert 0 < rate <= 250 / (3 * REDRAW)  # rows over the time they took


def test_a_resumed_stage_starts_at_the_work_done_before():
    out = io.StringIO()
    with StageProgress(
        "download",
        total_rows=40,
        total_shards=4,
        initial_rows=30,
        initial_shards=3,
        shown=True,
        file=out,
    ) as bar:
        bar.advance(10)
    frames = _frames(out.getvalue())
    assert "30/40" in frames[0] and "3/4 shards" in frames[0]
    assert "40/40" in frames[-1] and "4/4 shards" in frames[-1]


def test_a_hidden_bar_writes_nothing():
    out = io.StringIO()
    with StageProgress("embed", total_rows=10, shown=False, file=out) as bar:
        bar.advance(10)
    assert out.getvalue() == ""


def test_a_bar_is_shown_on_a_terminal_unless_asked_otherwise(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert progress_shown(file=_Terminal()) is True
    assert progress_shown(file=io.StringIO()) is False  # a log file, a pipe: no redraws there
    assert progress_shown(False, file=_Terminal()) is False
    monkeypatch.setenv(ENVIRONMENT, "0")
    assert progress_shown(file=_Terminal()) is False
    monkeypatch.setenv(ENVIRONMENT, "1")
    assert progress_shown(file=io.StringIO()) is True


def test_rows_are_counted_from_parquet_footers_where_cheap(tmp_path):
    for i, n in enumerate((3, 5)):
        pq.write_table(pa.table({"x": list(range(n))}), tmp_path / f"part-{i}.parquet")
    assert parquet_rows(sorted(tmp_path.glob("*.parquet"))) == 8
    assert parquet_rows([tmp_path / "part-0.parquet", "s3://bucket/part-1.parquet"]) is None
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert parquet_rows([tmp_path / "bad.parquet"]) is None


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def test_the_local_engine_draws_a_bar_in_rows_per_stage(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENVIRONMENT, "1")
    argv = ["decode", "--images", str(images), f"runs_dir={tmp_path}", "name=bar"]
    assert main([*argv, "rows_per_shard=5"]) == 0
    last = _frames(capsys.readouterr().err)[-1]
    # 12 images in shards of 5: the bar counts the 12 rows, not the 3 shards.
    assert re.search(r"^decode: 100%.* 12/12 \[.*rows/s, 3/3 shards]", last), last


def test_the_local_engine_draws_nothing_off_a_terminal(images, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    argv = ["decode", "--images", str(images), f"runs_dir={tmp_path}", "name=quiet"]
    assert main(argv) == 0
    assert "rows/s" not in capsys.readouterr().err
