"""URL lists over a served synthetic web, mixing good images with every kind of failure.

Each row says what a careful downloader should end up with (``expected``):

- ``ok``: the image downloads (one of them through a 302 redirect);
- ``slow``: served only after the server's ``slow_seconds`` (fails under a shorter timeout);
- ``flaky``: 503 on the first try, the image on a retry;
- ``not_found``: 404;
- ``refused``: a port the server holds bound but not listening, so connections are refused;
- a bad-file expectation from ``ground_truth/bad.parquet`` (``corrupt``, ``empty``, ...).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from curation.synth.layout import STREAM_URLS, SynthWeb, stream_rng
from curation.synth.server import SynthWebServer
from schemas import URL_LIST_SCHEMA, validate

SYNTH_URL_LIST_SCHEMA = URL_LIST_SCHEMA.append(
    pa.field("expected_key", pa.string(), nullable=False)
).append(pa.field("expected", pa.string(), nullable=False))
N_MISSING = 3
N_REFUSED = 2
N_FLAKY = 3


def _refused_base_url(server: SynthWebServer | str, refused_port: int | None) -> str:
    if isinstance(server, SynthWebServer):
        if refused_port is not None:
            return f"http://{server.host}:{int(refused_port)}"
        return server.refused_base_url
    host = urlsplit(server).hostname or "127.0.0.1"
    if refused_port is not None:
        return f"http://{host}:{int(refused_port)}"
    running = SynthWebServer.running_at(server)
    if running is None:
        raise ValueError(
            f"no SynthWebServer of this process serves {server}: pass the server itself, or "
            "refused_port= (a port kept bound and not listening while the list is used)"
        )
    return running.refused_base_url


def build_url_list(
    web: SynthWeb,
    server: SynthWebServer | str,
    *,
    include_bad: bool = True,
    refused_port: int | None = None,
    slow: bool = True,
    flaky: bool = False,
) -> pa.Table:
    """The URL list as a table (SYNTH_URL_LIST_SCHEMA), shuffled deterministically by the seed.

    ``server``: the running server, or its base URL. Refused URLs point at ``refused_port`` if
    given, else at the port the server holds bound and not listening for its lifetime. The list
    depends only on the seed, the base URL and that port.
    """
    base_url = (server.base_url if isinstance(server, SynthWebServer) else server).rstrip("/")
    refused_base_url = _refused_base_url(server, refused_port)
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
    for i in range(N_REFUSED):
        key = f"refused-{i:03d}"
        url = f"{refused_base_url}/images/{key}.jpg"
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
    server: SynthWebServer | str,
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
        server,
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
