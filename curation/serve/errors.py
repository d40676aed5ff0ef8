"""The one exception handlers raise to answer a request with an error status."""

from __future__ import annotations


class HttpError(Exception):
    """Answer with ``status`` and ``{"error": message}``; the message is shown to the client, so it
    never holds a traceback nor a path outside the runs root."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
