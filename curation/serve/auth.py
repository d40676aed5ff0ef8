"""The submission token: where it comes from, and the check of a request's bearer header.

Without a token the service is read-only: there is no default token, so a service started without
one can never submit. The header is compared with :func:`hmac.compare_digest` on SHA-256 digests:
its time depends neither on where the first differing byte is nor on the token's length.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from curation.config import ConfigError
from curation.serve.errors import HttpError

TOKEN_ENV = "LVD_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16
_MAKE_ONE = 'python -c "import secrets; print(secrets.token_hex(32))"'


def _checked(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise ConfigError(f"{source} is empty; make a token with {_MAKE_ONE}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            f"{source} must hold one token of at least {MIN_TOKEN_CHARS} characters and no "
            f"spaces; make one with {_MAKE_ONE}"
        )
    return token


def read_token_file(path: Path, what: str) -> str:
    """The token in ``path`` (surrounding whitespace ignored); a one-line error if unusable."""
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from exc
    return _checked(text, f"{what} {path}")


def load_token(token_file: Path | None) -> str | None:
    """The service token: ``token_file`` if given, else ``$LVD_SERVE_TOKEN``, else None (the
    service is read-only)."""
    if token_file is not None:
        return read_token_file(token_file, "token file")
    from_env = os.environ.get(TOKEN_ENV)
    if from_env is None:
        return None
    return _checked(from_env, f"${TOKEN_ENV}")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def check_bearer(header: str | None, token: str | None) -> None:
    """Return if ``header`` is ``Bearer <token>``; else 403 (no token configured: read-only) or
    401 (missing or wrong token)."""
    if token is None:
        raise HttpError(
            403,
            f"submission is disabled: this service is read-only (start it with --token-file or "
            f"${TOKEN_ENV} to allow submissions)",
        )
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HttpError(
            401, "submission needs 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(_digest(given.strip()), _digest(token)):
        raise HttpError(
            401,
            "the token is not this service's",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
