"""``lvd serve --runs RUNS_DIR``: an HTTP service over a runs root (see :mod:`curation.serve`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger("curation.serve")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def register(sub) -> None:
    parser = sub.add_parser(
        "serve",
        help="an HTTP service over a runs root: runs, stats, reports; Ray submission with a token",
        description="Serves, as JSON, every run under RUNS_DIR with its stages' status (complete "
        "once _SUCCESS exists) and counts, each stage's _stats.json, and each run's report.html "
        "and manifest.json; GET / lists the routes. With a token (--token-file, or "
        '$LVD_SERVE_TOKEN) it also takes POST /submit {"name": RUN, "config": ...} from '
        "clients sending 'Authorization: Bearer <token>', and submits jobs/curate_ray.py to the "
        "Ray cluster at --ray-address through the Ray Jobs API; without one it is read-only. "
        "Listens on 127.0.0.1 unless told otherwise: there is no TLS, so put a TLS proxy in "
        "front of any other address.",
    )
    parser.add_argument(
        "--runs", type=Path, required=True, metavar="RUNS_DIR", help="the runs root (local)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=8000, help="port (0: any free one)")
    parser.add_argument(
        "--ray-address",
        default="http://127.0.0.1:8265",
        help="the Ray cluster's dashboard (Jobs API) address",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding this service's submission token (default: $LVD_SERVE_TOKEN; "
        "neither: read-only)",
    )
    parser.add_argument(
        "--ray-token-file",
        type=Path,
        help="file holding the Ray cluster's auth token, sent to the Jobs API (default: Ray's "
        "own, from RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or ~/.ray/auth_token)",
    )
    parser.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from curation import storage
    from curation.commands.common import input_folder
    from curation.config import ConfigError
    from curation.serve.app import ServeConfig, is_loopback, make_server
    from curation.serve.auth import load_token, read_token_file
    from curation.serve.runs import RunsRoot
    from curation.serve.submit import RayJobs, check_submission_possible

    if storage.is_uri(str(ns.runs)):
        raise ConfigError(f"runs folder {ns.runs} must be a local folder")
    runs = RunsRoot(input_folder(ns.runs, "runs folder"))
    token = load_token(ns.token_file)
    ray_token = read_token_file(ns.ray_token_file, "Ray token file") if ns.ray_token_file else None
    if token is not None:
        check_submission_possible()
    config = ServeConfig(runs, token, RayJobs(ns.ray_address, ray_token))
    try:
        server = make_server(config, ns.host, ns.port)
    except OSError as exc:  # in use, or not an address of this machine
        raise ConfigError(f"cannot listen on {ns.host}:{ns.port}: {exc.strerror or exc}") from exc
    host, port = server.server_address[:2]
    if not is_loopback(ns.host):
        logger.warning(
            "listening on %s without TLS: the bearer token crosses the network in clear text",
            ns.host,
        )
    mode = f"submits to Ray at {ns.ray_address}" if token else "read-only: no token"
    print(f"lvd serve: {runs.root} on http://{host}:{port} ({mode}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
