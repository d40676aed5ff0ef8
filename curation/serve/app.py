"""The HTTP face of a runs root: routes, handlers and the server (stdlib ``http.server``).

    GET  /                               what this service offers
    GET  /runs                           every run: stage status, rows_in/rows_out
    GET  /runs/<run>                     the run's stages with their whole _stats.json
    GET  /runs/<run>/report              report.html (text/html)
    GET  /runs/<run>/manifest            manifest.json
    GET  /runs/<run>/stats/<stage>       the stage's _stats.json
    POST /submit                         {"name": RUN, "config": ...} -> a Ray job (bearer token)
    GET  /jobs/<id>                      the Ray job's status

The path is split on ``/`` before any percent-decoding, and each decoded segment must be a plain
name: ``..``, ``.``, an encoded ``/`` or a NUL is a 400, never a step up the tree. Every error is
``{"error": "..."}`` with its status code; an unexpected exception is logged here and answered
with a bare 500, never with its traceback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from curation.serve.auth import check_bearer
from curation.serve.errors import HttpError
from curation.serve.runs import MANIFEST, REPORT, RunsRoot
from curation.serve.submit import (
    RayJobs,
    discard_submission,
    parse_submission,
    write_submission,
)

logger = logging.getLogger("curation.serve")

MAX_BODY_BYTES = 1 << 20  # a pipeline config is a few KiB
JSON = "application/json"
HTML = "text/html; charset=utf-8"
# The report is one self-contained page (inline SVG, data: images): it needs no network, so it
# gets none, and a report built from crawled data cannot call back anywhere.
REPORT_POLICY = (
    "default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; font-src data:; base-uri 'none'; form-action 'none'"
)
ROUTES = (
    "GET /runs",
    "GET /runs/<run>",
    "GET /runs/<run>/report",
    "GET /runs/<run>/manifest",
    "GET /runs/<run>/stats/<stage>",
    "POST /submit",
    "GET /jobs/<id>",
)


@dataclass(frozen=True)
class ServeConfig:
    runs: RunsRoot
    token: str | None = None  # None: read-only, submissions refused
    ray: RayJobs | None = None


def split_path(raw: str) -> list[str]:
    """``/runs/a%20b/stats`` -> ``["runs", "a b", "stats"]``; a 400 for any segment that could
    move up or across the tree once decoded."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise HttpError(400, "the request target must be a path starting with '/'")
    segments = path[1:].split("/")
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    try:
        decoded = [unquote(segment, errors="strict") for segment in segments]
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not UTF-8 once percent-decoded") from None
    for segment in decoded:
        if segment in ("", ".", "..") or any(c in segment for c in "/\\\0"):
            raise HttpError(400, "the path holds an empty, '.' or '..' segment or a separator")
    return decoded


class Handler(BaseHTTPRequestHandler):
    """One request; ``self.server.serve_config`` holds the runs root, the token and Ray."""

    server_version = "lvd-serve"
    timeout = 30  # a client that stops sending frees its thread
    protocol_version = "HTTP/1.0"  # one request per connection

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    @property
    def config(self) -> ServeConfig:
        return self.server.serve_config  # type: ignore[attr-defined]

    # ----- responses

    def _send(self, status: int, body: bytes, content_type: str, headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers=None) -> None:
        body = (json.dumps(payload, indent=2, default=str) + "\n").encode()
        self._send(status, body, JSON, headers)

    def _send_file(self, path: Path, content_type: str, headers=None) -> None:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            shutil.copyfileobj(handle, self.wfile)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """http.server's own errors (a malformed request line, an unknown method) as JSON too."""
        self.close_connection = True
        try:
            self._send_json(code, {"error": message or HTTPStatus(code).phrase})
        except OSError:  # the client is gone
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        logger.info("%s %s", self.address_string(), format % args)

    # ----- dispatch

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _dispatch(self, route) -> None:
        try:
            route(split_path(self.path))
        except HttpError as exc:
            self._send_json(exc.status, {"error": exc.message}, exc.headers)
        except (BrokenPipeError, ConnectionResetError):
            logger.info("%s went away", self.address_string())
        except Exception:  # a bug: its traceback goes to the log, never to the client
            logger.exception("%s %s failed", self.command, self.path)
            self._send_json(500, {"error": "internal error; see the service's log"})

    def _get(self, parts: list[str]) -> None:
        runs = self.config.runs
        match parts:
            case []:
                self._send_json(200, self._index())
            case ["runs"]:
                self._send_json(200, {"runs": runs.list_runs()})
            case ["runs", run]:
                self._send_json(200, runs.run_detail(run))
            case ["runs", run, "report"]:
                self._send_file(
                    runs.run_file(run, REPORT), HTML, {"Content-Security-Policy": REPORT_POLICY}
                )
            case ["runs", run, "manifest"]:
                self._send_file(runs.run_file(run, MANIFEST), JSON)
            case ["runs", run, "stats", stage]:
                self._send_file(runs.stats_file(run, stage), JSON)
            case ["jobs", job_id]:
                self._send_json(200, self._jobs().status(job_id))
            case ["submit"]:
                raise HttpError(405, "use POST /submit", {"Allow": "POST"})
            case _:
                raise HttpError(404, f"no such resource; this service offers {list(ROUTES)}")

    def _post(self, parts: list[str]) -> None:
        if parts != ["submit"]:
            if parts[:1] in (["runs"], ["jobs"], []):
                raise HttpError(405, "this resource is read-only: use GET", {"Allow": "GET"})
            raise HttpError(404, f"no such resource; this service offers {list(ROUTES)}")
        check_bearer(self.headers.get("Authorization"), self.config.token)
        submission = parse_submission(self._body())
        jobs = self._jobs()
        config = write_submission(self.config.runs, submission)
        try:
            job_id = jobs.submit(submission.run, config)
        except HttpError:
            discard_submission(self.config.runs, config)  # no job will read it
            raise
        logger.info("submitted run %s as Ray job %s (%s)", submission.run, job_id, config)
        self._send_json(
            202,
            {
                "job_id": job_id,
                "run": submission.run,
                "config": str(config.relative_to(self.config.runs.root)),
                "status": f"/jobs/{job_id}",
            },
        )

    # ----- helpers

    def _jobs(self) -> RayJobs:
        if self.config.ray is None:
            raise HttpError(503, "this service has no Ray cluster configured")
        return self.config.ray

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(411, "send the body with a Content-Length, not chunked")
        length = self.headers.get("Content-Length")
        if length is None:
            raise HttpError(411, "the request needs a Content-Length")
        try:
            size = int(length)
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if size < 0:
            raise HttpError(400, "Content-Length is negative")
        if size > MAX_BODY_BYTES:
            raise HttpError(413, f"the body is over {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(size)
        if len(body) != size:
            raise HttpError(400, "the body is shorter than its Content-Length")
        return body

    def _index(self) -> dict[str, Any]:
        ray = self.config.ray
        return {
            "service": "lvd serve",
            "routes": list(ROUTES),
            "submission": "enabled" if self.config.token is not None else "disabled (read-only)",
            "ray_address": ray.address if ray is not None else None,
        }


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000):
    """A started-but-not-serving server on ``host:port`` (port 0: a free one); call
    ``serve_forever()`` on it, ``shutdown()`` from another thread to stop."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.serve_config = config  # type: ignore[attr-defined]
    return server
