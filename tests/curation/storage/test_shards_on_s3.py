"""LVD shards and their manifest on object storage: a run folder on a real S3-compatible server
(moto) gives the same shards, byte for byte, as the run on local disk, and ``verify`` re-reads
them from the store."""

from __future__ import annotations

import dataclasses
import hashlib

from curation import storage
from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.manifest import build_manifest, verify_manifest, write_manifest
from curation.jobs.shards import run_shards
from curation.stages.shard import ShardConfig
from tests.curation.storage.conftest import BUCKET
from tests.shard_sources import retrieved_images, write_sources


def _run(cfg: CurationConfig) -> None:
    with get_engine("local", progress=False) as engine:
        run_shards(cfg, engine)


def test_shards_and_manifest_on_a_store_match_local_disk(s3_server, tmp_path):
    shards = ShardConfig(samples_per_shard=4)
    local = CurationConfig(name="lvd", runs_dir=tmp_path, shards=shards)
    table, _ = write_sources(local.run_dir.root)
    retrieved_images(local.run_dir.root, table)
    remote_root = f"s3://{BUCKET}/shards-test/lvd"
    storage.copy_tree(local.run_dir.root, remote_root)  # sources and their bytes, run-relative
    _run(local)
    remote = dataclasses.replace(local, runs_dir=f"s3://{BUCKET}/shards-test")
    _run(remote)
    names = [f"shard-{i:05d}.{ext}" for i in range(4) for ext in ("tar", "index.parquet")]
    for name in names:
        local_bytes = (local.run_dir.root / "shards" / name).read_bytes()
        remote_bytes = storage.read_bytes(storage.join(remote_root, "shards", name))
        assert hashlib.sha256(remote_bytes).digest() == hashlib.sha256(local_bytes).digest()
    manifest = write_manifest(remote_root)
    assert manifest["shards"] == build_manifest(local.run_dir.root)["shards"]
    assert verify_manifest(remote_root) == []
    tar = storage.join(remote_root, "shards", "shard-00001.tar")
    storage.write_bytes(tar, storage.read_bytes(tar)[:-512])
    problems = verify_manifest(remote_root)
    assert len(problems) == 1 and problems[0].startswith("shards/shard-00001.tar: ")
