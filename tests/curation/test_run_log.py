"""What the terminal shows while a command runs, and what goes to the run's log file
(curation.run_log): lvd's messages and everyone's warnings on stderr, third-party chatter in
``<run>/_logs/lvd.log``, everything on stderr with ``-v``."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from curation import run_log
from curation.cli import main

REPO = Path(__file__).resolve().parents[2]


def _chatty_decode(monkeypatch, *, prints: bool = False):
    """``lvd decode`` with its work replaced by messages of every kind."""

    def run_decode(cfg, engine, inputs):
        logging.getLogger("curation.jobs.decode").info("lvd says what it does")
        logging.getLogger("curation.jobs.decode").debug("lvd debug detail")
        logging.getLogger("fsspec.local").info("fsspec chatter")
        logging.getLogger("fsspec.local").debug("fsspec debug detail")
        logging.getLogger("PIL.Image").warning("a third-party warning")
        warnings.warn("a Python warning", UserWarning, stacklevel=1)
        if prints:
            with run_log.prints_to_log("img2dataset"):
                print("Downloading starting now, check your bandwidth")
                sys.stderr.write("0it [00:00, ?it/s]\r\x1b[A1it [00:01, 1.0it/s]\r")
        return {"rows": 0}

    monkeypatch.setattr("curation.jobs.decode.run_decode", run_decode)
    monkeypatch.setattr("curation.commands.decode.shard_inputs", lambda *args: [])


def _decode(tmp_path, *flags):
    return main([*flags, "decode", "--input", "unused", f"runs_dir={tmp_path}", "name=chat"])


def test_the_terminal_shows_lvd_and_warnings_the_log_file_the_rest(tmp_path, monkeypatch, capsys):
    _chatty_decode(monkeypatch)
    assert _decode(tmp_path) == 0
    err = capsys.readouterr().err
    assert "INFO curation.jobs.decode: lvd says what it does" in err
    assert "WARNING PIL.Image: a third-party warning" in err
    assert "a Python warning" in err
    assert "fsspec chatter" not in err and "debug detail" not in err
    log = (tmp_path / "chat" / "_logs" / "lvd.log").read_text()
    assert log.startswith("==== lvd decode --input unused")
    for line in (
        "lvd says what it does",
        "fsspec chatter",
        "a third-party warning",
        "a Python warning",
    ):
        assert line in log
    assert "debug detail" not in log


def test_verbose_shows_everything_on_the_terminal(tmp_path, monkeypatch, capsys):
    _chatty_decode(monkeypatch)
    assert _decode(tmp_path, "-v") == 0
    err = capsys.readouterr().err
    for line in (
        "lvd debug detail",
        "fsspec chatter",
        "fsspec debug detail",
        "a third-party warning",
    ):
        assert line in err
    assert (
        "DEBUG fsspec.local: fsspec debug detail" in (tmp_path / "chat/_logs/lvd.log").read_text()
    )


def test_a_library_prints_go_to_the_log_file_as_its_records(tmp_path, monkeypatch, capsys):
    _chatty_decode(monkeypatch, prints=True)
    assert _decode(tmp_path) == 0
    captured = capsys.readouterr()
    assert "Downloading starting" not in captured.out + captured.err
    assert captured.out.startswith("{")  # the command's own output is untouched
    log = (tmp_path / "chat" / "_logs" / "lvd.log").read_text()
    assert "INFO img2dataset: Downloading starting now" in log
    # A redrawn bar: one record per state, without the cursor movements.
    assert "INFO img2dataset: 0it [00:00, ?it/s]\n" in log and "1it [00:01" in log
    assert "\x1b" not in log


def test_with_verbose_a_library_prints_where_it_always_did(tmp_path, monkeypatch, capsys):
    _chatty_decode(monkeypatch, prints=True)
    assert _decode(tmp_path, "-v") == 0
    assert "Downloading starting now" in capsys.readouterr().out


def test_outside_a_command_nothing_is_captured(capsys):
    with run_log.prints_to_log("img2dataset"):
        print("a notebook sees this")
    assert "a notebook sees this" in capsys.readouterr().out
    assert run_log.third_party_log() is None


def test_each_command_appends_and_leaves_logging_as_it_found_it(tmp_path, monkeypatch, capsys):
    root = logging.getLogger()
    handlers, level, showwarning = list(root.handlers), root.level, warnings.showwarning
    _chatty_decode(monkeypatch)
    assert _decode(tmp_path) == 0 and _decode(tmp_path) == 0
    assert root.handlers == handlers and root.level == level
    assert warnings.showwarning is showwarning  # warnings no longer go through logging
    log = (tmp_path / "chat" / "_logs" / "lvd.log").read_text()
    assert log.count("==== lvd decode") == 2


def test_a_refused_command_leaves_no_log_file(tmp_path, capsys):
    code = main(["decode", "--input", str(tmp_path / "nope"), f"runs_dir={tmp_path}", "name=x"])
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_run_on_a_store_logs_on_this_machine():
    path = run_log.log_file_of("s3://bucket/runs/web")
    assert path.name.startswith("web-") and path.suffix == ".log"
    assert path != run_log.log_file_of("s3://other/runs/web")


@pytest.mark.timeout(60)
def test_a_worker_sends_its_output_to_the_log_file_and_its_warnings_to_the_terminal(tmp_path):
    log = tmp_path / "lvd.log"
    script = textwrap.dedent(
        f"""
        import logging, os
        from curation.run_log import send_output_to
        send_output_to({str(log)!r})
        send_output_to({str(log)!r})  # a worker calls it once per shard
        print("worker chatter")
        os.write(2, b"C library chatter\\n")
        logging.getLogger("curation.download").warning("shard 3 failed")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "shard 3 failed" in done.stderr and "chatter" not in done.stderr
    text = log.read_text()
    assert "worker chatter" in text and "C library chatter" in text and "shard 3 failed" in text
