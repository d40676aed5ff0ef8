"""A real S3-compatible server on localhost (moto in server mode) for the object-storage tests."""

from __future__ import annotations

import logging
import os
import socket

import pytest

BUCKET = "lvd-test"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(require):
    """``s3://lvd-test`` served on a free local port; the environment points every client at it
    (as a user would with ``AWS_ENDPOINT_URL``) for the whole session."""
    moto_server = require("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {name: os.environ.get(name) for name in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    from curation import storage

    storage._s3_filesystem.cache_clear()
    require("boto3").client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    storage._s3_filesystem.cache_clear()
    server.stop()
