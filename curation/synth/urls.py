"""URL lists over a served synthetic web, mixing good images with every kind of failure.

Each row says what a careful downloader should end up with (``expected``):

- ``ok``: the image downloads (one of them through a 302 redirect);
- ``slow``: served only after the server's ``slow_seconds`` (fails under a shorter timeout);
- ``flaky``: 503 on the first try, the image on a retry;
- ``not_found``: 404;
- ``refused``: nothing listens on that port;
- a bad-file expectation from ``ground_truth/bad.parquet`` (``corrupt``, ``empty``, ...).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from curation.synth.layout import STREAM_URLS, SynthWeb, stream_rng
from schemas import URL_LIST_SCHEMA, validate

SYNTH_URL_LIST_SCHEMA = URL_LIST_SCHEMA.append(
    pa.field("expected_key", pa.string(), nullable=False)
).append(pa.field("expected", pa.string(), nullable=False))
N_MISSING = 3
N_REFUSED = 2
N_FLAKY = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (bound, then closed, so connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def build_url_list(
    web: SynthWeb,
    base_url: str,
    *,
    include_bad: bool = True,
    refused_port: int | None = None,
    slow: bool = True,
    flaky: bool = False,
) -> pa.Table:
    """The URL list as a table (SYNTH_URL_LIST_SCHEMA), shuffled deterministically by the seed."""
    base_url = base_url.rstrip("/")
    rng = stream_rng(web.config.seed, STREAM_URLS)
    rows: list[tuple[str, str, str, str]] = []  # url, caption, expected_key, expected

    pool = web.read("pool").select(["key", "file"]).to_pylist()
    n_special = (1 if slow else 0) + (N_FLAKY if flaky else 0) + 1
    if n_special > len(pool):
        raise ValueError(
            f"the pool has {len(pool)} images; the URL list needs at least {n_special}"
        )
    special = [int(i) for i in rng.choice(len(pool), size=n_special, replace=False)]
    routes: dict[int, tuple[str, str]] = {special.pop(): ("redirect", "ok")}
    if slow:
        routes[special.pop()] = ("slow", "slow")
    for index in special:  # what is left is flaky
        routes[index] = ("flaky", "flaky")
    for index, row in enumerate(pool):
        route, expected = routes.get(index, ("", "ok"))
        prefix = f"/{route}" if route else ""
        url = f"{base_url}{prefix}/{row['file']}"
        rows.append((url, f"synthetic pool image {row['key']}", row["key"], expected))

    if include_bad:
        for row in web.read("bad").select(["key", "file", "expected"]).to_pylist():
            url = f"{base_url}/{row['file']}"
            rows.append((url, f"synthetic bad file {row['key']}", row["key"], row["expected"]))
    for i in range(N_MISSING):
        key = f"missing-{i:03d}"
        rows.append((f"{base_url}/missing/{key}.jpg", f"missing image {key}", key, "not_found"))
    port = free_port() if refused_port is None else int(refused_port)
    for i in range(N_REFUSED):
        key = f"refused-{i:03d}"
        url = f"http://127.0.0.1:{port}/images/{key}.jpg"
        rows.append((url, f"unreachable image {key}", key, "refused"))

    order = rng.permutation(len(rows))
    columns = list(zip(*[rows[i] for i in order]))
    table = pa.Table.from_arrays(
        [pa.array(column, pa.string()) for column in columns], schema=SYNTH_URL_LIST_SCHEMA
    )
    validate(table, URL_LIST_SCHEMA, allow_extra=True)
    return table


def write_url_list(
    web: SynthWeb,
    base_url: str,
    path: Path,
    *,
    include_bad: bool = True,
    refused_port: int | None = None,
    slow: bool = True,
    flaky: bool = False,
) -> pa.Table:
    """Build the URL list (see :func:`build_url_list`) and write it to ``path`` as Parquet, CSV or
    JSON lines, chosen by suffix (``.parquet``, ``.csv``, ``.jsonl``); returns the table."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".jsonl"):
        raise ValueError(f"url list {path} must end in .parquet, .csv or .jsonl")
    table = build_url_list(
        web,
        base_url,
        include_bad=include_bad,
        refused_port=refused_port,
        slow=slow,
        flaky=flaky,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        if suffix == ".parquet":
            pq.write_table(table, tmp)
        elif suffix == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            lines = (json.dumps(row, sort_keys=True) for row in table.to_pylist())
            tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return table
