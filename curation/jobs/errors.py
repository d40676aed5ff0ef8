"""The errors a user can act on: entry points print them as one line and exit 2, no traceback."""

from __future__ import annotations

from curation.config import ConfigError
from curation.engines import EngineResourceError, EngineUnavailable
from schemas import SchemaError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    SchemaError,
    FileNotFoundError,
    EngineUnavailable,
    EngineResourceError,
)
