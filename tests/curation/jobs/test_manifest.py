"""``manifest.json``: valid, complete, the same bytes on every emit; ``lvd manifest --verify``
catches corrupted, truncated, missing and unlisted shards in one line each."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from curation.cli import main
from curation.config import load_config
from curation.engines import get_engine
from curation.io import write_json_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.manifest import (
    MANIFEST,
    build_manifest,
    config_sha256,
    verify_manifest,
    write_manifest,
)
from curation.jobs.shards import run_shards
from curation.rundir import RunDir
from curation.runner import run_table_stage
from schemas import STATUS_OK, embedding_schema, validate_manifest
from tests.shard_sources import retrieved_images, write_sources


def _stage_with_stats(run_root: Path, name: str, stats: dict, config: dict | None = None):
    stage = RunDir(run_root).stage(name)
    stage.path.mkdir(parents=True)
    stage.write_stats(stats)
    if config is not None:
        stage.save_config({"stage": name, "config": config})
    stage.mark_complete()


def _embeddings(run_root: Path, stage: str, model_id: str) -> None:
    schema = embedding_schema(4)
    vectors = np.eye(4, dtype=np.float32)
    table = pa.table(
        {
            "key": [f"k{i}" for i in range(4)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4),
            "model_id": [model_id] * 4,
            "status": [STATUS_OK] * 4,
            "error_message": pa.nulls(4, pa.string()),
        },
        schema=schema,
    )
    run_table_stage(stage, lambda: table, schema, RunDir(run_root).stage(stage))


def _make_run(root: Path, name: str, *overrides: str) -> tuple[Path, pa.Table]:
    cfg = load_config(
        CurationConfig,
        [],
        [f"runs_dir={root}", f"name={name}", "shards.samples_per_shard=4", *overrides],
    )
    run_root = cfg.run_dir.root
    table, _ = write_sources(run_root)
    retrieved_images(run_root, table)
    _stage_with_stats(
        run_root,
        "dedup_exact",
        {"rows_in": 30, "rows_out": 26, "reason_kept": 26, "reason_exact_duplicate": 4},
    )
    _stage_with_stats(
        run_root,
        "dedup_copy",
        {
            "rows_in": 20,
            "rows_out": 14,
            "reason_kept": 14,
            "reason_duplicate": 4,
            "reason_eval_contaminated": 2,
            "eval_val": {"eval_images": 5, "pool_images_matched": 2, "examples": []},
            "pairs": 6,
            "scoring": {"kind": "cosine", "threshold": 0.6, "calibration_from": None},
            "seconds": 1.25,
        },
        config={"eval_threshold": 0.45, "k": 64},
    )
    near = RunDir(run_root).stage("dedup_near")  # begun, never finished: absent from the manifest
    near.path.mkdir()
    near.write_stats({"rows_in": 1, "rows_out": 1})
    _embeddings(run_root, "embed_sscd", "sscd_disc_mixup")
    _embeddings(run_root, "embed_retrieval", "dinov2_vits14")
    write_json_atomic(
        run_root / "_safety.json",
        {"filters": [{"filter": "nsfw", "model_id": "nudenet-320n", "checked": 30, "removed": 1}]},
    )
    with get_engine("local", progress=False) as engine:
        run_shards(cfg, engine)
    return run_root, table


@pytest.fixture(scope="module")
def tar_run(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("runs"), "manifest_tars")


@pytest.fixture
def tar_copy(tar_run, tmp_path):
    """A copy of the tar run to damage."""
    target = tmp_path / "copy" / tar_run[0].name
    shutil.copytree(tar_run[0], target)
    write_manifest(target)
    return target


def test_manifest_describes_the_shards_and_the_curation(tar_run):
    run_root, table = tar_run
    manifest = build_manifest(run_root)
    validate_manifest(manifest)
    assert manifest["name"] == "manifest_tars" and manifest["format"] == "webdataset"
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 4, 4, 2]
    assert manifest["num_samples"] == table.num_rows
    for entry in manifest["shards"]:
        for item in (entry, entry["index"]):
            data = (run_root / item["path"]).read_bytes()
            assert item["sha256"] == hashlib.sha256(data).hexdigest()
            assert item["size_bytes"] == len(data)
        assert entry["index"]["path"] == entry["path"].replace(".tar", ".index.parquet")
    assert manifest["size_bytes"] == sum(
        e["size_bytes"] + e["index"]["size_bytes"] for e in manifest["shards"]
    )
    expected = Counter(zip(table["seed_dataset"].to_pylist(), table["mode"].to_pylist()))
    assert {(r["seed_dataset"], r["mode"]): r["num_samples"] for r in manifest["composition"]} == (
        dict(expected)
    )
    assert manifest["dedup"] == {
        "exact": {"images_in": 30, "images_kept": 26, "removed": {"exact_duplicate": 4}},
        "copy": {
            "images_in": 20,
            "images_kept": 14,
            "removed": {"duplicate": 4},
            "pairs": 6,
            "score": "cosine",
            "threshold": 0.6,
        },
    }  # dedup_near never finished: absent
    assert manifest["decontamination"] == {
        "eval_threshold": 0.45,
        "images_removed": 2,
        "eval_sets": [{"name": "val", "eval_images": 5, "pool_images_matched": 2}],
    }
    assert "ingest" not in manifest
    assert manifest["models"] == [
        {"stage": "embed_retrieval", "model_id": "dinov2_vits14"},
        {"stage": "embed_sscd", "model_id": "sscd_disc_mixup"},
        {"stage": "nsfw", "model_id": "nudenet-320n"},
    ]
    assert manifest["safety"][0]["filter"] == "nsfw"
    stats = json.loads((run_root / "shards" / "_stats.json").read_text())
    assert manifest["created_at"] == stats["completed_at"]
    assert manifest["sharding"]["samples_per_shard"] == 4 and manifest["sharding"]["dropped"] == {}
    assert manifest["config_sha256"] == config_sha256(run_root)


def test_reemitting_gives_the_same_bytes_even_from_a_moved_copy(tar_run, tmp_path):
    run_root, _ = tar_run
    first = write_manifest(run_root)
    written = (run_root / MANIFEST).read_bytes()
    assert json.loads(written) == first
    write_manifest(run_root)
    assert (run_root / MANIFEST).read_bytes() == written
    moved = tmp_path / "elsewhere" / run_root.name
    shutil.copytree(run_root, moved)  # new mtimes, another absolute path
    (moved / MANIFEST).unlink()
    write_manifest(moved)
    assert (moved / MANIFEST).read_bytes() == written


def test_config_hash_follows_values_not_yaml_formatting(tar_copy):
    config_path = tar_copy / "_config.yaml"
    before = config_sha256(tar_copy)
    data = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump(data, sort_keys=True, indent=4))
    assert config_sha256(tar_copy) == before
    data["shards"]["seed"] = 99
    config_path.write_text(yaml.safe_dump(data))
    assert config_sha256(tar_copy) != before


def test_lvd_manifest_writes_then_verifies_clean(tar_copy, capsys):
    (tar_copy / MANIFEST).unlink()
    assert main(["manifest", str(tar_copy)]) == 0
    assert "4 shard(s), 14 sample(s)" in capsys.readouterr().out
    assert (tar_copy / MANIFEST).exists()
    assert main(["manifest", str(tar_copy), "--verify"]) == 0
    captured = capsys.readouterr()
    assert "every shard matches" in captured.out and captured.err == ""


def _verify_fails(run_root: Path, capsys) -> list[str]:
    assert main(["manifest", str(run_root), "--verify"]) == 1
    return capsys.readouterr().err.strip().splitlines()


def test_a_corrupted_tar_fails_verify_in_one_line_naming_it(tar_copy, capsys):
    tar = tar_copy / "shards" / "shard-00001.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF  # one flipped byte inside a member: same size, another checksum
    tar.write_bytes(bytes(data))
    lines = _verify_fails(tar_copy, capsys)
    assert len(lines) == 1
    assert lines[0].startswith("lvd manifest: verify failed: shards/shard-00001.tar: sha256 ")


def test_a_truncated_tar_and_a_missing_index_fail_verify(tar_copy, capsys):
    tar = tar_copy / "shards" / "shard-00002.tar"
    tar.write_bytes(tar.read_bytes()[:1000])
    (tar_copy / "shards" / "shard-00000.index.parquet").unlink()
    lines = _verify_fails(tar_copy, capsys)
    assert lines == [
        "lvd manifest: verify failed: shards/shard-00000.index.parquet: missing",
        f"lvd manifest: verify failed: shards/shard-00002.tar: 1000 bytes, the manifest says "
        f"{json.loads((tar_copy / MANIFEST).read_text())['shards'][2]['size_bytes']}",
    ]


def test_counts_and_unlisted_files_are_checked(tar_copy):
    manifest = json.loads((tar_copy / MANIFEST).read_text())
    manifest["shards"][3]["num_samples"] = 3
    manifest["num_samples"] += 1
    (tar_copy / MANIFEST).write_text(json.dumps(manifest))
    shutil.copy(tar_copy / "shards" / "shard-00000.tar", tar_copy / "shards" / "shard-00009.tar")
    assert verify_manifest(tar_copy) == [
        "shards/shard-00003.tar: holds 2 samples, the manifest says 3",
        "shards/shard-00003.index.parquet: holds 2 samples, the manifest says 3",
        "shards/shard-00009.tar: a shard file the manifest does not name",
    ]
    manifest["num_samples"] = 1
    (tar_copy / MANIFEST).write_text(json.dumps(manifest))
    assert "num_samples 1, its shards hold 15" in verify_manifest(tar_copy)[-1]
    (tar_copy / MANIFEST).write_text("{not json")
    assert len(verify_manifest(tar_copy)) == 1


def test_parquet_shards_are_counted_and_verified(tmp_path):
    run_root, table = _make_run(tmp_path, "manifest_parquet", "shards.format=parquet")
    manifest = write_manifest(run_root)
    assert manifest["format"] == "parquet"
    assert [s["path"] for s in manifest["shards"]] == [
        f"shards/shard-{i:05d}.parquet" for i in range(4)
    ]
    assert all("index" not in s for s in manifest["shards"])
    assert manifest["num_samples"] == table.num_rows
    assert verify_manifest(run_root) == []
    shard = run_root / "shards" / "shard-00003.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    assert [p.split(":")[0] for p in verify_manifest(run_root)] == ["shards/shard-00003.parquet"]


def test_command_errors_are_one_line(tmp_path, capsys):
    assert main(["manifest", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope does not exist" in err
    (tmp_path / "run" / "shards").mkdir(parents=True)
    assert main(["manifest", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lvd shards" in err
    assert main(["manifest", str(tmp_path / "run"), "--verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json does not exist" in err
