"""The JSON Schema of ``manifest.json`` (written by :mod:`curation.jobs.manifest`) and its validator.

Version 2 (``schema_version``): one entry per shard, each tar with its own index; the composition
per seed dataset and mode; dedup, decontamination and safety summaries; model ids; config hash.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema

from schemas.validate import SchemaError

MANIFEST_JSON_SCHEMA: dict[str, Any] = json.loads(
    resources.files("schemas").joinpath("manifest.schema.json").read_text()
)
MANIFEST_VERSION: int = MANIFEST_JSON_SCHEMA["properties"]["schema_version"]["const"]


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise :class:`SchemaError` naming the offending path if ``manifest`` breaks the schema."""
    try:
        jsonschema.validate(manifest, MANIFEST_JSON_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "<root>"
        raise SchemaError(f"manifest.json invalid at {where}: {exc.message}") from exc
