"""Where a command's messages go: lvd's own and every warning to the terminal, everything to the
run's log file.

``lvd`` shows on stderr its own messages (INFO and up) and every WARNING and ERROR, whichever
library raised it. The chatter of the libraries it drives (img2dataset's banner and per-shard
statistics, Ray, py4j/PySpark, fsspec, PIL) goes only to the run's log file,
``<run>/_logs/lvd.log``, which every command on that run appends to. ``lvd -v`` shows everything,
DEBUG included, on the terminal as well.

The log file is attached once a command knows its run (:func:`attach_run_log`, called by
:func:`~curation.commands.common.load_job_config`) and opened with its first record, so a command
refused before any work leaves nothing behind. A run on an object store (no appending there) logs
to this machine's temp folder instead, named after the run. Commands without a run have no log
file: their third-party chatter is dropped unless ``-v``.

Prints are not log records: :func:`prints_to_log` turns the prints of this process into records of
a library's logger while that library runs, and :func:`send_output_to` points a worker process's
stdout and stderr (the file descriptors, so C libraries' output too) at the log file.

Outside the CLI (a notebook, a test calling ``run_download``) nothing here is active and libraries
print as they always did.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from curation import storage

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE = Path("_logs") / "lvd.log"  # run-relative; "_": not a stage folder
# Loggers whose INFO messages the terminal shows: lvd's packages (and scripts run as __main__).
OWN_LOGGERS = frozenset({"curation", "pretrain", "schemas", "jobs", "benchmarks", "__main__"})
# Terminal control sequences (a progress bar moving the cursor): meaningless in a file.
_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def is_own(logger_name: str) -> bool:
    return logger_name.split(".", 1)[0] in OWN_LOGGERS


class ConsoleFilter(logging.Filter):
    """lvd's own records, and anyone's warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or is_own(record.name)


class ConsoleHandler(logging.StreamHandler):
    """Writes through ``tqdm.write``, which lifts any progress bar on the same stream first, so a
    message never lands in the middle of a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class RunLogHandler(logging.FileHandler):
    """Appends to the run's log file, created (with its folder) by the first record, under a
    heading naming the command."""

    def __init__(self, path: Path, heading: str):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.heading = heading

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        stream.write(f"==== {self.heading} (pid {os.getpid()}) ====\n")
        return stream


@dataclass
class _Session:
    verbose: bool
    heading: str
    file_handler: RunLogHandler | None = None


_session: _Session | None = None


def _formatter() -> logging.Formatter:
    return logging.Formatter(LOG_FORMAT)


@contextlib.contextmanager
def cli_logging(verbose: bool, heading: str) -> Iterator[None]:
    """Logging for one ``lvd`` command (see the module docstring); undone when it returns, so a
    process that runs several (tests) starts each afresh."""
    global _session
    root = logging.getLogger()
    saved_level = root.level
    console = ConsoleHandler(sys.stderr)
    console.setFormatter(_formatter())
    if not verbose:
        console.addFilter(ConsoleFilter())
    root.addHandler(console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)  # warnings.warn -> "py.warnings" records: shown, and logged
    session = _session = _Session(verbose=verbose, heading=heading)
    try:
        yield
    except BaseException as exc:
        # Python prints the traceback on the terminal; the log file keeps it too.
        if session.file_handler is not None and not isinstance(exc, SystemExit):
            to_file_only(logging.ERROR, "%s failed", heading, exc_info=exc)
        raise
    finally:
        _session = None
        logging.captureWarnings(False)
        root.removeHandler(console)
        if session.file_handler is not None:
            root.removeHandler(session.file_handler)
            session.file_handler.close()
        root.setLevel(saved_level)


def log_file_of(run_root: str | os.PathLike) -> Path:
    """The log file of a run: ``<run>/_logs/lvd.log``, or for a run on an object store
    ``<temp>/lvd-logs/<run name>-<hash of its URI>.log`` on this machine."""
    if storage.is_uri(run_root):
        uri = str(run_root).rstrip("/")
        digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
        name = uri.rsplit("/", 1)[-1] or "run"
        return Path(tempfile.gettempdir()) / "lvd-logs" / f"{name}-{digest}.log"
    return Path(run_root).absolute() / LOG_FILE


def attach_run_log(run_root: str | os.PathLike) -> Path | None:
    """Send this command's log records to its run's log file; returns the file, or None outside
    an ``lvd`` command."""
    session = _session
    if session is None:
        return None
    path = log_file_of(run_root)
    current = session.file_handler
    if current is not None:
        if Path(current.baseFilename) == path:
            return path
        logging.getLogger().removeHandler(current)
        current.close()
    handler = RunLogHandler(path, session.heading)
    handler.setFormatter(_formatter())
    logging.getLogger().addHandler(handler)
    session.file_handler = handler
    return path


def third_party_log() -> Path | None:
    """The file that third-party prints go to, or None if they stay where they are (outside the
    CLI, before a run is known, and with ``-v``)."""
    session = _session
    if session is None or session.verbose or session.file_handler is None:
        return None
    return Path(session.file_handler.baseFilename)


def to_file_only(level: int, message: str, *args, exc_info=None) -> None:
    """A record for the log file alone (what the terminal already shows in its own words), if
    the file is open: a command refused before any work leaves no log file behind."""
    session = _session
    if session is None or session.file_handler is None or session.file_handler.stream is None:
        return
    if exc_info is not None:
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    record = logging.getLogger("curation.cli").makeRecord(
        "curation.cli", level, __file__, 0, message, args, exc_info
    )
    session.file_handler.handle(record)


class _LinesToLogger(io.TextIOBase):
    """A text stream that turns each line written to it (ended by a newline, or by the carriage
    return of a redrawn progress bar) into an INFO record of ``logger``, terminal control
    sequences removed."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger
        self.pending = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            text = _TERMINAL_CONTROL.sub("", self.pending + text)
            lines = text.replace("\r", "\n").split("\n")
            self.pending = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        with self.lock:
            line, self.pending = self.pending, ""
        if line.strip():
            self.logger.info(line.rstrip())


@contextlib.contextmanager
def prints_to_log(logger_name: str) -> Iterator[None]:
    """While a library runs in this process, its prints (``sys.stdout`` and ``sys.stderr``)
    become records of ``logger_name``, which reach the log file and not the terminal. Log
    handlers and progress bars made before keep their own streams. Does nothing when
    :func:`third_party_log` is None."""
    if third_party_log() is None:
        yield
        return
    stream = _LinesToLogger(logging.getLogger(logger_name))
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.flush()


_sent_to: str | None = None


def send_output_to(path: str | os.PathLike) -> None:
    """In a worker process: its stdout and stderr (file descriptors 1 and 2, so prints,
    tracebacks and C libraries alike) appended to ``path``. Its warnings and errors logged through
    ``logging`` still reach the terminal it was started from. Idempotent."""
    global _sent_to
    path = str(path)
    if _sent_to == path:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    terminal = os.dup(2) if _sent_to is None else None
    target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
    finally:
        os.close(target)
    for stream in (sys.stdout, sys.stderr):
        # Pool workers are terminated, not exited: a block buffer would lose its last lines.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)
    if terminal is not None:
        console = logging.StreamHandler(os.fdopen(terminal, "w", buffering=1))
        console.setLevel(logging.WARNING)
        console.setFormatter(_formatter())
        in_file = logging.StreamHandler(sys.stderr)
        in_file.setFormatter(_formatter())
        root = logging.getLogger()
        root.addHandler(console)
        root.addHandler(in_file)
    _sent_to = path
