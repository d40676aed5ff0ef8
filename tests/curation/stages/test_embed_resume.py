"""A rerun of the embed job redoes only the shards without a marker: the model sees only their
images, and every other output shard is left as it was."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.embed import run_embed
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.models.inference import BatchEmbedder
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.stages.embed import EmbedConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_descriptor_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        build_descriptor("resnet18", dim=16, width=8),
        arch="resnet18",
        dim=16,
        arch_kwargs={"width": 8},
        inference={"size": 32, "resize": "square"},
    )


@pytest.fixture(scope="module")
def shards(small_web, tmp_path_factory):
    files = list_image_files(small_web.pool_dir)[:64]
    return write_encoded_shards(files, tmp_path_factory.mktemp("encoded"), rows_per_shard=16)


@pytest.fixture
def images_through_model(monkeypatch) -> list[int]:
    """The number of images of each forward pass of the embedder in this process."""
    seen: list[int] = []
    real_forward = BatchEmbedder.forward_uint8

    def counting_forward(self, pixels):
        chunks = pixels if isinstance(pixels, list) else [pixels]
        seen.append(sum(len(chunk) for chunk in chunks))
        return real_forward(self, pixels)

    monkeypatch.setattr(BatchEmbedder, "forward_uint8", counting_forward)
    return seen


def _files(stage_dir) -> dict[str, tuple[int, int]]:
    """Output shards and markers by name: (inode, mtime); a rewrite changes both."""
    paths = [*stage_dir.path.glob("part-*.parquet"), *stage_dir.path.glob("_shards/*.json")]
    return {f"{p.parent.name}/{p.name}": (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def test_rerun_embeds_only_the_shard_whose_marker_is_gone(
    checkpoint, shards, tmp_path, images_through_model
):
    embed = EmbedConfig(
        model="descriptor", checkpoint=checkpoint, device="cpu", batch_size=8, num_workers=0
    )
    cfg = CurationConfig(name="embed", runs_dir=tmp_path, embed=embed)
    stage_dir = cfg.run_dir.stage("embed_sscd")
    with get_engine("local", progress=False) as engine:
        first = run_embed(cfg, engine, shards)
    assert sum(images_through_model) == first["rows_out"] == 64
    reference = pq.read_table(stage_dir.outputs()).sort_by("key")

    victim = shards[2]
    (stage_dir.path / "_SUCCESS").unlink()
    (stage_dir.path / "_shards" / f"{victim.stem}.json").unlink()
    before = _files(stage_dir)
    images_through_model.clear()
    with get_engine("local", progress=False) as engine:
        second = run_embed(cfg, engine, shards)

    assert sum(images_through_model) == pq.read_metadata(victim).num_rows == 16
    after = _files(stage_dir)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {f"embed_sscd/{victim.name}", f"_shards/{victim.stem}.json"}
    assert stage_dir.is_complete()
    assert second["shards"] == len(shards) and second["rows_out"] == first["rows_out"]
    got = pq.read_table(stage_dir.outputs()).sort_by("key")
    assert got.column("key").equals(reference.column("key"))
    np.testing.assert_allclose(
        got.column("embedding").combine_chunks().flatten().to_numpy(),
        reference.column("embedding").combine_chunks().flatten().to_numpy(),
        atol=1e-6,
    )
