"""Data contracts: Arrow schemas for every stage boundary and the manifest JSON Schema."""

from schemas.manifest import MANIFEST_JSON_SCHEMA, validate_manifest
from schemas.tables import (
    ALL_SCHEMAS,
    CLUSTER_ASSIGNMENT_SCHEMA,
    DEDUP_COMPONENT_SCHEMA,
    DEDUP_EDGE_SCHEMA,
    DOWNLOADED_SAMPLE_SCHEMA,
    ENCODED_IMAGE_SCHEMA,
    HASH_DEDUP_SCHEMA,
    IMAGE_HASH_SCHEMA,
    IMAGE_RECORD_SCHEMA,
    RETRIEVAL_SELECTION_SCHEMA,
    SHARD_INDEX_SCHEMA,
    SHARD_RESULT_SCHEMA,
    STATUS_OK,
    URL_LIST_SCHEMA,
    embedding_schema,
    schema_name,
)
from schemas.validate import SchemaError, conform, validate

__all__ = [
    "ALL_SCHEMAS",
    "CLUSTER_ASSIGNMENT_SCHEMA",
    "DEDUP_COMPONENT_SCHEMA",
    "DEDUP_EDGE_SCHEMA",
    "DOWNLOADED_SAMPLE_SCHEMA",
    "ENCODED_IMAGE_SCHEMA",
    "HASH_DEDUP_SCHEMA",
    "IMAGE_HASH_SCHEMA",
    "IMAGE_RECORD_SCHEMA",
    "MANIFEST_JSON_SCHEMA",
    "RETRIEVAL_SELECTION_SCHEMA",
    "SHARD_INDEX_SCHEMA",
    "SHARD_RESULT_SCHEMA",
    "STATUS_OK",
    "URL_LIST_SCHEMA",
    "SchemaError",
    "conform",
    "embedding_schema",
    "schema_name",
    "validate",
    "validate_manifest",
]
