import pytest

from schemas import SchemaError, validate_manifest


def _manifest():
    return {
        "schema_version": 1,
        "name": "demo",
        "created_at": "2026-11-26T00:00:00Z",
        "num_samples": 3,
        "index": {"path": "index.parquet", "sha256": "a" * 64},
        "shards": [
            {"path": "shard-000000.tar", "num_samples": 3, "size_bytes": 10, "sha256": "b" * 64}
        ],
        "sources": [{"seed_dataset": "pets", "mode": "sample", "num_samples": 3}],
    }


def test_valid_manifest_passes():
    validate_manifest(_manifest())


def test_bad_manifest_names_the_path():
    manifest = _manifest()
    manifest["shards"][0]["sha256"] = "not-a-hash"
    with pytest.raises(SchemaError, match="shards/0/sha256"):
        validate_manifest(manifest)


def test_unknown_mode_and_missing_field_are_rejected():
    manifest = _manifest()
    manifest["sources"][0]["mode"] = "vibes"
    with pytest.raises(SchemaError):
        validate_manifest(manifest)
    manifest = _manifest()
    del manifest["num_samples"]
    with pytest.raises(SchemaError, match="num_samples"):
        validate_manifest(manifest)
