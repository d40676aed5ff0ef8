import dataclasses
import gc
import json
import os
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from pretrain.data.shards import write_parquet_shards, write_tar_shards
from pretrain.train.checkpoint import latest_checkpoint, list_checkpoints
from pretrain.train.config import OptimConfig
from pretrain.train.loop import METRICS_FILE, TrainingDivergedError, train
from pretrain.train.meta_arch import SSLMetaArch

sys.path.insert(0, str(Path(__file__).parent))
from test_meta_arch import tiny_config  # noqa: E402

ITERATIONS = 8
KILLED_AFTER = 4


def loop_config(**overrides):
    optim = OptimConfig(
        epochs=2,
        iterations_per_epoch=ITERATIONS // 2,
        base_lr=0.1,  # x sqrt(8 / 1024): a short, visible descent on a tiny ViT
        warmup_epochs=0.5,
        warmup_teacher_temp_epochs=0,
        freeze_last_layer_epochs=0.5,
    )
    fields = dict(optim=optim, num_workers=0, checkpoint_every=2, keep_checkpoints=2)
    return dataclasses.replace(tiny_config(), **(fields | overrides))


def _images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"k{i:03d}", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_rank_runs(rank, world_size, port, source, root):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cfg = loop_config()
    keys, forward_backward = [], SSLMetaArch.forward_backward

    def recording(self, batch, teacher_temp):
        keys.append(list(batch["keys"]))
        return forward_backward(self, batch, teacher_temp)

    SSLMetaArch.forward_backward = recording
    full = train(cfg, source, f"{root}/full")
    SSLMetaArch.forward_backward = forward_backward
    keys_by_rank = [None] * world_size
    torch.distributed.all_gather_object(keys_by_rank, keys)
    first = train(cfg, source, f"{root}/resumed", max_iterations=KILLED_AFTER)
    # A save that crashed half-way must be ignored by the resume.
    if rank == 0:
        os.makedirs(f"{root}/resumed/checkpoints/tmp-iter_00000006")
    torch.distributed.barrier()
    resumed = train(cfg, source, f"{root}/resumed")
    if rank == 0:
        Path(f"{root}/losses.json").write_text(
            json.dumps(
                {
                    "full": full.losses,
                    "first": first.losses,
                    "resumed": resumed.losses,
                    "keys": keys_by_rank,
                }
            )
        )
    gc.collect()  # sharded models hold reference cycles: free them before the group goes
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_result(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_loop")
    source = write_tar_shards(_images(), str(root / "tars"), samples_per_shard=8)
    mp.spawn(_two_rank_runs, args=(2, _free_port(), source, str(root)), nprocs=2, join=True)
    return root, json.loads((root / "losses.json").read_text())


def test_two_gloo_ranks_train_and_the_loss_falls(two_rank_result):
    root, losses = two_rank_result
    full = losses["full"]
    assert len(full) == ITERATIONS and all(np.isfinite(full))
    assert np.mean(full[-2:]) < np.mean(full[:2]) - 0.5
    lines = [json.loads(line) for line in (root / "full" / METRICS_FILE).read_text().splitlines()]
    assert [line["iteration"] for line in lines] == list(range(ITERATIONS))
    assert lines[0]["total_loss"] == pytest.approx(full[0])
    for key in ("dino_local_crops_loss", "ibot_loss", "koleo_loss", "lr", "momentum"):
        assert key in lines[-1]
    # keep-last-2 of the checkpoints at 2, 4, 6, 8
    assert [p.name for p in list_checkpoints(root / "full" / "checkpoints")] == [
        "iter_00000006",
        "iter_00000008",
    ]


def test_ranks_see_disjoint_tar_samples_that_cover_each_epoch(two_rank_result):
    _, losses = two_rank_result
    per_epoch = ITERATIONS // 2  # 32 images / (4 per rank * 2 ranks)
    rank0, rank1 = losses["keys"]
    for epoch in range(2):
        steps = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        seen0 = [k for batch in rank0[steps] for k in batch]
        seen1 = [k for batch in rank1[steps] for k in batch]
        assert not set(seen0) & set(seen1)
        assert sorted(seen0 + seen1) == [f"k{i:03d}" for i in range(32)]


def test_killed_and_resumed_run_repeats_the_uninterrupted_losses(two_rank_result):
    root, losses = two_rank_result
    assert losses["first"] == pytest.approx(losses["full"][:KILLED_AFTER], rel=1e-5)
    assert len(losses["resumed"]) == ITERATIONS - KILLED_AFTER
    assert losses["resumed"] == pytest.approx(losses["full"][KILLED_AFTER:], rel=1e-4, abs=1e-5)
    lines = (root / "resumed" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == list(range(ITERATIONS))
    assert not list((root / "resumed" / "checkpoints").glob("tmp-*"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    source = write_parquet_shards(_images(8), str(tmp_path / "shards"), samples_per_shard=8)[0]
    real = SSLMetaArch.forward_backward
    calls = []

    def diverging(self, batch, teacher_temp):
        calls.append(1)
        total, loss_dict = real(self, batch, teacher_temp)
        if len(calls) == 3:
            loss_dict["total_loss"] = float("nan")
        return total, loss_dict

    monkeypatch.setattr(SSLMetaArch, "forward_backward", diverging)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="iteration 2.*iter_00000002"):
        train(loop_config(), str(tmp_path / "shards"), out)
    assert source.endswith(".parquet")
    assert latest_checkpoint(out / "checkpoints").name == "iter_00000002"
    monkeypatch.setattr(SSLMetaArch, "forward_backward", real)
    resumed = train(loop_config(), str(tmp_path / "shards"), out, max_iterations=3)
    assert len(resumed.losses) == 1 and np.isfinite(resumed.losses[0])


def test_exported_teacher_loads_strictly_as_a_backbone(two_rank_result, tmp_path):
    from pretrain.models import load_backbone
    from pretrain.train.checkpoint import export_teacher_backbone

    root, _ = two_rank_result
    cfg = loop_config()
    model = SSLMetaArch(cfg)
    checkpoint = latest_checkpoint(root / "full" / "checkpoints")
    path = export_teacher_backbone(checkpoint, model, tmp_path / "teacher.pth")
    state = torch.load(path, weights_only=True)
    assert "cls_token" in state and "blocks.1.ls2.gamma" in state
    assert not any(k.startswith(("dino_head", "backbone.")) for k in state)
    b = cfg.backbone
    loaded = load_backbone(
        path,
        arch="vit",
        img_size=cfg.crops.global_crops_size,
        patch_size=b.patch_size,
        embed_dim=b.embed_dim,
        depth=b.depth,
        num_heads=b.num_heads,
        init_values=b.layerscale,
        block_chunks=0,  # the torch.hub layout: blocks.N.*
    )
    fresh = SSLMetaArch(cfg).teacher.backbone.state_dict()
    trained = loaded.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh), "teacher was not trained"
    torch.testing.assert_close(trained, dict(model.teacher.backbone.state_dict()))
