"""One progress bar per stage, counted in rows: rows done, rows per second, the time left.

A curator reasons in images, not in shards (whose size is a setting), so every long step of a run
(a stage on the local engine, the download) draws one bar in rows. When the stage knows its total
rows up front the bar has a percentage and an ETA; when counting them would cost a request per
shard (inputs on an object store) it counts shards toward their total, with the rows and their
rate beside it.

A bar is drawn on a terminal only: in a log file or CI output its redraws would be noise.
``LVD_PROGRESS=0`` turns bars off on a terminal too, ``LVD_PROGRESS=1`` draws them anywhere.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import TextIO

import pyarrow.parquet as pq
from tqdm import tqdm

from curation import storage

ENVIRONMENT = "LVD_PROGRESS"
_OFF = {"0", "false", "no", "off", "never"}
_ON = {"1", "true", "yes", "on", "always"}
# Above this many rows the counts read 1.44M rather than 1440000.
SCALE_UNITS_FROM = 100_000


def progress_shown(requested: bool | None = None, file: TextIO | None = None) -> bool:
    """Whether to draw a bar on ``file`` (stderr by default): ``requested`` if given, else
    ``LVD_PROGRESS`` if set, else whether ``file`` is a terminal."""
    if requested is not None:
        return requested
    setting = os.environ.get(ENVIRONMENT, "").strip().lower()
    if setting in _OFF:
        return False
    if setting in _ON:
        return True
    file = sys.stderr if file is None else file
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def parquet_rows(paths: Iterable[str | os.PathLike], *, local_only: bool = True) -> int | None:
    """The rows of these Parquet files, from their footers; None when a file is on an object store
    (with ``local_only``: a request per file) or cannot be read (the stage reports that itself)."""
    total = 0
    for path in paths:
        if local_only and storage.is_uri(path):
            return None
        try:
            with storage.open_input(path) as handle:
                total += pq.read_metadata(handle).num_rows
        except (OSError, ValueError):  # pyarrow raises ArrowInvalid, a ValueError
            return None
    return total


class StageProgress:
    """A stage's bar: ``advance(rows)`` as each shard finishes.

    ``total_rows`` known: the bar counts rows (percentage, rows/s, ETA) and shows the shards done
    beside it. Unknown: it counts shards toward ``total_shards``, with rows and rows/s beside.
    ``initial_rows`` / ``initial_shards``: work a resumed stage had already done, counted as done
    but not toward the rate. ``shown``: see :func:`progress_shown`.
    """

    def __init__(
        self,
        name: str,
        *,
        total_rows: int | None = None,
        total_shards: int | None = None,
        initial_rows: int = 0,
        initial_shards: int = 0,
        shown: bool | None = None,
        file: TextIO | None = None,
    ):
        file = sys.stderr if file is None else file
        self.in_rows = total_rows is not None
        self.rows = initial_rows
        self.shards = initial_shards
        self.total_shards = total_shards
        self._initial_rows = initial_rows
        self._start = time.monotonic()
        scale = self.in_rows and total_rows >= SCALE_UNITS_FROM
        self.bar = tqdm(
            total=total_rows if self.in_rows else total_shards,
            initial=initial_rows if self.in_rows else initial_shards,
            desc=name,
            unit="rows" if self.in_rows else "shards",
            unit_scale=scale,
            file=file,
            disable=not progress_shown(shown, file),
            dynamic_ncols=True,
            postfix=self._postfix(),  # in the first draw too
        )

    @property
    def shown(self) -> bool:
        return not self.bar.disable

    def _postfix(self) -> str:
        """What the bar says beside its count: the shards done (counting rows), or the rows and
        their rate (counting shards)."""
        if self.in_rows:
            of = f"/{self.total_shards}" if self.total_shards is not None else ""
            return f"{self.shards}{of} shards"
        seconds = time.monotonic() - self._start
        rate = (self.rows - self._initial_rows) / seconds if seconds > 0 else 0.0
        return f"{self.rows} rows, {rate:.1f} rows/s"

    def advance(self, rows: int, shards: int = 1) -> None:
        """``shards`` more shards done, holding ``rows`` rows."""
        self.rows += rows
        self.shards += shards
        self.bar.set_postfix_str(self._postfix(), refresh=False)
        self.bar.update(rows if self.in_rows else shards)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
