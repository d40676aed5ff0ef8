import pytest

from schemas import MANIFEST_VERSION, SchemaError, validate_manifest


def _manifest():
    return {
        "schema_version": 2,
        "name": "demo",
        "created_at": "2026-11-26T00:00:00Z",
        "format": "webdataset",
        "num_samples": 3,
        "size_bytes": 30,
        "config_sha256": "c" * 64,
        "sharding": {"samples_per_shard": 1000, "seed": 0, "max_side": None},
        "shards": [
            {
                "path": "shards/shard-00000.tar",
                "num_samples": 3,
                "size_bytes": 10,
                "sha256": "b" * 64,
                "index": {
                    "path": "shards/shard-00000.index.parquet",
                    "size_bytes": 20,
                    "sha256": "a" * 64,
                },
            }
        ],
        "composition": [{"seed_dataset": "pets", "mode": "sample", "num_samples": 3}],
        "dedup": {"copy": {"images_in": 5, "images_kept": 3, "removed": {"duplicate": 2}}},
        "decontamination": {"eval_threshold": 0.45, "images_removed": 0, "eval_sets": []},
        "models": [{"stage": "embed_sscd", "model_id": "sscd_disc_mixup"}],
    }


def test_valid_manifest_passes():
    assert MANIFEST_VERSION == 2
    validate_manifest(_manifest())


def test_bad_manifest_names_the_path():
    manifest = _manifest()
    manifest["shards"][0]["sha256"] = "not-a-hash"
    with pytest.raises(SchemaError, match="shards/0/sha256"):
        validate_manifest(manifest)
    manifest = _manifest()
    manifest["shards"][0]["index"]["sha256"] = "A" * 64
    with pytest.raises(SchemaError, match="shards/0/index/sha256"):
        validate_manifest(manifest)


def test_unknown_fields_old_versions_and_missing_fields_are_rejected():
    manifest = _manifest()
    manifest["format"] = "zip"
    with pytest.raises(SchemaError, match="format"):
        validate_manifest(manifest)
    manifest = _manifest()
    manifest["dedup"]["copy"]["vibes"] = 1
    with pytest.raises(SchemaError, match="dedup/copy"):
        validate_manifest(manifest)
    manifest = _manifest()
    manifest["schema_version"] = 1
    with pytest.raises(SchemaError, match="schema_version"):
        validate_manifest(manifest)
    for field in ("num_samples", "composition", "models"):
        manifest = _manifest()
        del manifest[field]
        with pytest.raises(SchemaError, match=field):
            validate_manifest(manifest)
