"""A local HTTP server for the synthetic web, so download tests and the demo need no internet.

Routes (``<path>`` is relative to the served root):

- ``/<path>``: the file, with a Content-Type from its suffix;
- ``/missing/...``: always 404;
- ``/slow/<path>``: the file after ``slow_seconds``;
- ``/flaky/<path>``: 503 on the first request for each path, the file afterwards;
- ``/redirect/<path>``: 302 to ``/<path>``.

``set_down(True)`` makes every request answer 503 until ``set_down(False)``. Paths with ``..``,
backslashes or an absolute form are refused with 400.

While running, the server also holds a second socket, bound but never listening
(``refused_port``): connections to it are refused, and no other process can take the port while
the server lives, so "connection refused" URLs stay refused for as long as the server runs.
"""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".parquet": "application/vnd.apache.parquet",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class _BadPath(ValueError):
    pass


def _safe_relative(path: str) -> str:
    """Validate a URL path below the served root and return it without its leading slash."""
    if "\\" in path or "\x00" in path:
        raise _BadPath(path)
    relative = path[1:] if path.startswith("/") else path
    # A second leading slash would be an absolute path once joined; ".." climbs out of the root.
    if relative.startswith("/") or any(part in ("..", ".") for part in relative.split("/")):
        raise _BadPath(path)
    return relative


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "SynthWeb/1"

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def _handle(self, send_body: bool) -> None:
        owner = self.server.owner
        path = unquote(urlsplit(self.path).path)
        owner._count(path)
        try:
            if owner.is_down:
                self._send_status(HTTPStatus.SERVICE_UNAVAILABLE, send_body)
                return
            route, _, rest = path.lstrip("/").partition("/")
            if route == "missing":
                self._send_status(HTTPStatus.NOT_FOUND, send_body)
            elif route == "slow":
                owner._stopping.wait(owner.slow_seconds)
                self._send_file("/" + rest, send_body)
            elif route == "flaky":
                if owner._first_flaky_request(rest):
                    self._send_status(HTTPStatus.SERVICE_UNAVAILABLE, send_body)
                else:
                    self._send_file("/" + rest, send_body)
            elif route == "redirect":
                _safe_relative("/" + rest)
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", "/" + rest)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send_file(path, send_body)
        except _BadPath:
            self._send_status(HTTPStatus.BAD_REQUEST, send_body)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away while fetching %s", path)

    def _send_status(self, status: HTTPStatus, send_body: bool) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_file(self, path: str, send_body: bool) -> None:
        root = self.server.owner.root
        target = (root / _safe_relative(path)).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            self._send_status(HTTPStatus.NOT_FOUND, send_body)
            return
        data = target.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header(
            "Content-Type", CONTENT_TYPES.get(target.suffix.lower(), DEFAULT_CONTENT_TYPE)
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if send_body:
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client never blocks shutdown
    allow_reuse_address = True
    request_queue_size = (
        128  # the default backlog of 5 makes concurrent clients wait for SYN retries
    )

    def __init__(self, address: tuple[str, int], owner: SynthWebServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        logger.debug("error while serving %s", client_address, exc_info=True)


# Running servers by base URL, so a URL list built from a base URL finds the refused port its
# server holds (see :func:`SynthWebServer.running_at`).
_RUNNING: weakref.WeakValueDictionary[str, SynthWebServer] = weakref.WeakValueDictionary()


class SynthWebServer:
    """Serve ``root`` on 127.0.0.1 from a background thread.

    ``port=0`` picks a free port; ``refused_port=0`` picks the port held open, not listening, for
    URLs that must be refused (a rerun may ask for the ports of an earlier run).

    >>> with SynthWebServer(web.root) as srv:
    ...     fetch(srv.base_url + "/images/pool/pool-000000.jpg")
    """

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refused_port: int = 0,
        slow_seconds: float = 3.0,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"cannot serve {self.root}: not a directory")
        if slow_seconds < 0:
            raise ValueError(f"slow_seconds must be >= 0, got {slow_seconds}")
        self.host = host
        self.slow_seconds = float(slow_seconds)
        self._requested_port = port
        self._requested_refused_port = refused_port
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._flaky_seen: set[str] = set()
        self._down = False
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._refused: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> SynthWebServer:
        if self._httpd is not None:
            raise RuntimeError("SynthWebServer is already running")
        self._stopping.clear()
        # Bound but never listening: the kernel refuses connections to it, and holding it keeps
        # any other socket off the port (a port merely free when the URL list was written is not).
        refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            refused.bind((self.host, self._requested_refused_port))
            self._httpd = _Server((self.host, self._requested_port), self)
        except BaseException:
            refused.close()
            raise
        self._refused = refused
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"synth-web-{self.port}",
            daemon=True,
        )
        self._thread.start()
        _RUNNING[self.base_url] = self
        logger.info("serving %s at %s", self.root, self.base_url)
        return self

    def shutdown(self) -> None:
        """Stop serving, wake any slow requests and join the server thread."""
        if self._httpd is None:
            return
        _RUNNING.pop(self.base_url, None)
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._refused is not None:
            self._refused.close()
        self._httpd, self._thread, self._refused = None, None, None

    def __enter__(self) -> SynthWebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # addresses ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("SynthWebServer is not running; call start() or use it in a with")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def refused_port(self) -> int:
        """A port held by this server, bound but not listening: connecting to it is refused."""
        if self._refused is None:
            raise RuntimeError("SynthWebServer is not running; call start() or use it in a with")
        return int(self._refused.getsockname()[1])

    @property
    def refused_base_url(self) -> str:
        return f"http://{self.host}:{self.refused_port}"

    @classmethod
    def running_at(cls, base_url: str) -> SynthWebServer | None:
        """The running server of this process whose ``base_url`` this is, if any."""
        return _RUNNING.get(base_url.rstrip("/"))

    def url_for(self, relative: str | Path, route: str | None = None) -> str:
        """The URL of ``relative`` (a path under root), optionally through a special route."""
        relative = Path(relative).as_posix().lstrip("/")
        prefix = f"/{route}" if route else ""
        return f"{self.base_url}{prefix}/{relative}"

    # behaviour ---------------------------------------------------------------------------------
    def set_down(self, down: bool) -> None:
        """While down, every request gets 503 (to test whole-host outages and retries)."""
        with self._lock:
            self._down = bool(down)

    @property
    def is_down(self) -> bool:
        with self._lock:
            return self._down

    @property
    def request_counts(self) -> dict[str, int]:
        """Requests seen per URL path (decoded, query stripped), as a snapshot."""
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._flaky_seen.clear()

    def _count(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1

    def _first_flaky_request(self, path: str) -> bool:
        with self._lock:
            if path in self._flaky_seen:
                return False
            self._flaky_seen.add(path)
            return True
