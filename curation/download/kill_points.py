"""Named points where a test makes the download driver SIGKILL itself (fault injection).

Set ``LVD_KILL_AT=<point>`` (or ``<point>#<n>`` for its n-th passage, counted per process) in the
environment of an ``lvd download`` process: the process kills itself with SIGKILL when it reaches
that point, as a crash or an out-of-memory kill would, with no chance to clean up. Tests use it to
kill at a known step instead of after a guessed delay. Points:

- ``logger_started``: img2dataset has just started its progress-logger process (every fetch,
  retries included);
- ``img2dataset_done``: img2dataset returned; the final pass over the shards has not run;
- ``shard_converted``: a shard's samples and encoded parts are written, its marker is not;
- ``retry_merge_ready``: a retry attempt's merged files are ready, none applied to the parts;
- ``retry_part_merged``: one original part was rewritten with its recovered rows.

Unset (always, outside tests), :func:`kill_point` costs one dictionary lookup.
"""

from __future__ import annotations

import collections
import os
import signal

KILL_AT = "LVD_KILL_AT"
_passages: collections.Counter = collections.Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process if ``LVD_KILL_AT`` names this point (and this passage)."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    _passages[name] += 1
    if _passages[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
