"""Host round-robin: order URLs so that consecutive requests go to different hosts.

img2dataset fetches a shard's URLs in order with many threads; a list sorted by site (as crawls
usually are) sends every thread to the same server at once. Interleaving by host spreads the load:
the i-th URL of every host comes before the (i+1)-th URL of any host.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa


def url_host(url: str | None) -> str:
    """The lower-cased host name of ``url`` ("" when it has none or does not parse)."""
    if not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def round_robin_order(hosts: Sequence[str]) -> np.ndarray:
    """Row indices that interleave ``hosts`` one URL per host at a time.

    Hosts take turns in order of first appearance and each host's URLs keep their order, so the
    result is deterministic. O(n log n), vectorised.
    """
    n = len(hosts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # dictionary_encode numbers hosts in order of first appearance.
    codes = np.asarray(pa.array(hosts, pa.string()).dictionary_encode().indices, dtype=np.int64)
    by_host = np.argsort(codes, kind="stable")
    sorted_codes = codes[by_host]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    counts = np.diff(np.r_[starts, n])
    rank = np.empty(n, dtype=np.int64)
    rank[by_host] = np.arange(n) - np.repeat(starts, counts)
    return np.lexsort((codes, rank))
