"""FSDP2 pretraining on 2 CPU ranks (gloo): sharding, EMA and clipping on shards, resharded
checkpoints, consolidation, and one real ``torchrun`` launch."""

import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
)
from torch.distributed.tensor import DTensor

from curation.cli import main
from curation.synth.images import render_image
from pretrain.data.shards import epoch_permutation, write_parquet_shards, write_tar_shards
from pretrain.models import load_backbone
from pretrain.train import checkpoint as ckpt
from pretrain.train.config import ParallelConfig
from pretrain.train.fsdp import prepare_model
from pretrain.train.loop import METRICS_FILE, train
from pretrain.train.meta_arch import SSLMetaArch
from pretrain.train.optim import build_optimizer, build_param_groups

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import KILLED_AFTER, _free_port, _images, loop_config  # noqa: E402
from test_meta_arch import fixed_batch, tiny_config  # noqa: E402

from tests.pretrain.train.test_pretrain_command import TINY as COMMAND_TINY

REPO = Path(__file__).resolve().parents[3]
N_IMAGES = 32
EPOCH = 4  # iterations: 32 images / (4 per rank * 2 ranks)
FINAL = f"iter_{2 * EPOCH:08d}"  # the last checkpoint of a run
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def synth_images(n=N_IMAGES):
    """Images of the synthetic web (4 classes), small enough for a tiny ViT."""
    return [
        (f"k{i:03d}", np.asarray(render_image(np.random.default_rng(i), i % 4, (48, 48))))
        for i in range(n)
    ]


def fsdp_config(**parallel):
    return loop_config(parallel=ParallelConfig(**parallel), checkpoint_every=EPOCH)


def _sharded(cfg, seed=0):
    torch.manual_seed(seed)
    model = SSLMetaArch(cfg)
    model.train()
    prepare_model(model, cfg.parallel, torch.device("cpu"))
    groups = build_param_groups(
        model.student.backbone, model.student.heads(), model.depth, cfg.optim
    )
    return model, build_optimizer(groups, cfg.optim)


def _full_state(model, optimizer=None):
    if optimizer is None:
        return get_model_state_dict(model, options=FULL)
    return get_state_dict(model, optimizer, options=FULL)


def _record_calls(log):
    """Wrap forward_backward and clip_gradients to log keys, losses and clip norms."""
    forward_backward, clip = SSLMetaArch.forward_backward, SSLMetaArch.clip_gradients

    def recording_forward_backward(self, batch, teacher_temp):
        log["keys"].append(list(batch["keys"]))
        return forward_backward(self, batch, teacher_temp)

    def recording_clip(self, max_norm):
        norms = clip(self, max_norm)
        log["norms"].append(norms)
        return norms

    SSLMetaArch.forward_backward = recording_forward_backward
    SSLMetaArch.clip_gradients = recording_clip
    return forward_backward, clip


def _rank_work(rank, world_size, port, source, root):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    out: dict = {}
    # FSDP and the all-reduce path train the same steps, logging keys and clip norms.
    for strategy in ("fsdp", "ddp"):
        log = {"keys": [], "norms": []}
        originals = _record_calls(log)
        result = train(fsdp_config(strategy=strategy), source, f"{root}/{strategy}")
        SSLMetaArch.forward_backward, SSLMetaArch.clip_gradients = originals
        out[strategy] = {"losses": result.losses, **log}
    # Killed after step KILLED_AFTER and resumed: the same steps as the uninterrupted run.
    first = train(fsdp_config(), source, f"{root}/resumed", max_iterations=KILLED_AFTER)
    out["resumed"] = first.losses + train(fsdp_config(), source, f"{root}/resumed").losses

    cfg = fsdp_config()
    model, optimizer = _sharded(cfg)
    out["sharded"] = isinstance(model.student.backbone.blocks[0].attn.qkv.weight, DTensor)
    out["teacher_sharded"] = isinstance(model.teacher.dino_head.last_layer.weight_v, DTensor)
    # A checkpoint saved by 2 ranks, gathered after loading it into a sharded model.
    ckpt.load_checkpoint(Path(f"{root}/fsdp/checkpoints/{FINAL}"), model, optimizer)
    gathered = _full_state(model)
    # A checkpoint saved by 1 process, loaded into 2 ranks' shards.
    model_1, optimizer_1 = _sharded(cfg, seed=1)
    single = Path(f"{root}/single/checkpoints/iter_00000002")
    extra = ckpt.load_checkpoint(single, model_1, optimizer_1)
    from_single = _full_state(model_1, optimizer_1)

    # EMA on the local shards equals the EMA of the full tensors.
    student, teacher = (_full_state(n) for n in (model.student, model.teacher))
    model.update_teacher(0.75)
    ema = _full_state(model.teacher)
    # bf16 compute (fp32 master weights) on CPU: close to fp32, but not the same numbers.
    batch = fixed_batch(cfg, seed=rank)
    losses = {}
    for precision in ("fp32", "bf16"):
        precise, _ = _sharded(fsdp_config(mixed_precision=precision))
        losses[precision] = precise.forward_backward(batch, 0.07)[1]
        precise.dino_loss.apply_center_update()  # no collective left pending
        grad = precise.student.backbone.blocks[0].attn.qkv.weight.grad
        out[f"{precision}_grad_dtype"] = str(grad.dtype)
        out[f"{precision}_param_dtype"] = str(precise.student.backbone.cls_token.dtype)
    out["precision_losses"] = losses
    if rank == 0:
        ema_error = max(
            (ema[k] - (0.75 * teacher[k] + 0.25 * student[k])).abs().max().item() for k in ema
        )
        out["ema_error"] = ema_error
        out["ema_moved"] = max((ema[k] - teacher[k]).abs().max().item() for k in ema)
        out["resume_extra"] = extra
        torch.save({"gathered": gathered, "from_single": from_single}, f"{root}/states.pt")
    keys_by_rank = [None] * world_size
    dist.all_gather_object(keys_by_rank, out["fsdp"]["keys"])
    out["keys_by_rank"] = keys_by_rank
    if rank == 0:
        Path(f"{root}/result.json").write_text(json.dumps(out))
    del model, model_1, optimizer, optimizer_1, precise
    gc.collect()  # sharded models hold reference cycles: free them before the group goes
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    images = synth_images()
    write_parquet_shards(images, str(root / "shards"), samples_per_shard=8)
    source = str(root / "shards")
    # A single-process run whose checkpoint the 2 ranks load (1 -> 2 ranks).
    single = train(fsdp_config(), source, root / "single", max_iterations=2)
    mp.spawn(_rank_work, args=(2, _free_port(), source, str(root)), nprocs=2, join=True)
    result = json.loads((root / "result.json").read_text())
    return root, source, result, torch.load(root / "states.pt", weights_only=True), single


def test_fsdp_trains_on_parquet_shards_like_the_all_reduce_path_and_resumes_exactly(two_ranks):
    _, _, result, _, _ = two_ranks
    assert result["sharded"] and result["teacher_sharded"]
    fsdp, ddp = result["fsdp"], result["ddp"]
    assert len(fsdp["losses"]) == 2 * EPOCH and all(np.isfinite(fsdp["losses"]))
    assert np.mean(fsdp["losses"][-2:]) < np.mean(fsdp["losses"][:2]) - 0.5  # the loss falls
    np.testing.assert_allclose(result["resumed"], fsdp["losses"], rtol=1e-5, atol=1e-6)
    # The same numbers as the all-reduce path up to float rounding (summation orders differ),
    # which lr 0.1 on a tiny ViT amplifies over the later steps.
    np.testing.assert_allclose(fsdp["losses"][:3], ddp["losses"][:3], rtol=1e-5)
    np.testing.assert_allclose(fsdp["losses"], ddp["losses"], rtol=1e-2)
    # Clip norms per sub-network are global norms: the replicated path's norms (on the first
    # steps; later ones are as sensitive to rounding as the losses, KoLeo's most of all).
    assert len(fsdp["norms"]) == len(ddp["norms"]) == 2 * EPOCH
    for sharded, replicated in zip(fsdp["norms"][:2], ddp["norms"][:2]):
        assert sharded.keys() == replicated.keys() == {"backbone", "head0"}
        for name in sharded:
            assert replicated[name] > 3.0  # above optim.clip_grad: clipping is at work
            assert sharded[name] == pytest.approx(replicated[name], rel=1e-5)


def test_ranks_see_disjoint_samples_that_cover_each_epoch(two_ranks):
    _, _, result, _, _ = two_ranks
    rank0, rank1 = result["keys_by_rank"]
    assert len(rank0) == len(rank1) == 2 * EPOCH
    for epoch in range(2):
        steps = slice(epoch * EPOCH, (epoch + 1) * EPOCH)
        seen0 = [k for batch in rank0[steps] for k in batch]
        seen1 = [k for batch in rank1[steps] for k in batch]
        assert not set(seen0) & set(seen1)
        assert sorted(seen0 + seen1) == [f"k{i:03d}" for i in range(N_IMAGES)]
    assert rank0[:EPOCH] != rank0[EPOCH:]  # a new permutation each epoch


def test_sharded_ema_and_mixed_precision(two_ranks):
    _, _, result, _, _ = two_ranks
    assert result["ema_moved"] > 1e-3  # student and teacher differ after training
    assert result["ema_error"] < 1e-6
    assert result["fp32_param_dtype"] == result["bf16_param_dtype"] == "torch.float32"
    assert result["fp32_grad_dtype"] == result["bf16_grad_dtype"] == "torch.float32"
    fp32, bf16 = result["precision_losses"]["fp32"], result["precision_losses"]["bf16"]
    # KoLeo is left out: at init the CLS tokens of a tiny ViT differ below bf16's resolution.
    for name in ("dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss"):
        assert bf16[name] == pytest.approx(fp32[name], rel=2e-2) and bf16[name] != fp32[name]


def test_checkpoints_reshard_between_one_and_two_ranks(two_ranks, tmp_path):
    root, source, result, states, single = two_ranks
    # 2 -> 1: the sharded checkpoint loads into an unsharded model as the gathered tensors.
    cfg = fsdp_config()
    model = SSLMetaArch(cfg)
    groups = build_param_groups(model.student.backbone, model.student.heads(), 2, cfg.optim)
    optimizer = build_optimizer(groups, cfg.optim)
    checkpoint = root / "fsdp" / "checkpoints" / FINAL
    extra = ckpt.load_checkpoint(checkpoint, model, optimizer)
    assert extra == {"iteration": 2 * EPOCH, "samples_seen": N_IMAGES * 2, "world_size": 2}
    torch.testing.assert_close(model.state_dict(), states["gathered"], rtol=0, atol=0)
    fresh = SSLMetaArch(cfg).state_dict()
    assert not torch.equal(fresh["teacher.backbone.pos_embed"], model.teacher.backbone.pos_embed)
    # 1 -> 2: the single process's model and AdamW moments, as the 2 ranks hold them.
    assert result["resume_extra"] == {"iteration": 2, "samples_seen": 8, "world_size": 1}
    model_state, optimizer_state = states["from_single"]
    one = torch.load(ckpt.consolidate_checkpoint(single.last_checkpoint, tmp_path / "one.pth"))
    torch.testing.assert_close(model_state, one["model"], rtol=0, atol=0)
    name = "student.backbone.blocks.1.mlp.fc1.weight"
    torch.testing.assert_close(
        optimizer_state["state"][name]["exp_avg"], one["optimizer"]["state"][name]["exp_avg"]
    )
    # A 2-rank run resumed by one process (with a longer schedule) continues at the next
    # sample of the global stream: the first samples of epoch 2.
    shutil.copytree(root / "fsdp", tmp_path / "run")
    longer = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=3))
    log = {"keys": [], "norms": []}
    originals = _record_calls(log)
    try:
        resumed = train(longer, source, tmp_path / "run", max_iterations=2 * EPOCH + 1)
    finally:
        SSLMetaArch.forward_backward, SSLMetaArch.clip_gradients = originals
    assert len(resumed.losses) == 1 and np.isfinite(resumed.losses[0])
    expected = [f"k{i:03d}" for i in epoch_permutation(N_IMAGES, cfg.seed, 2)[:4]]
    assert log["keys"] == [expected]


def test_consolidate_a_sharded_checkpoint_offline(two_ranks, tmp_path, capsys):
    root, _, _, states, _ = two_ranks
    run = root / "ddp"  # a run folder: its newest checkpoint is taken
    out = tmp_path / "full.pth"
    assert main(["checkpoint", "consolidate", str(root / "missing"), str(out)]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    checkpoint = root / "fsdp" / "checkpoints" / FINAL
    metadata = dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    # Each rank wrote its own rows of a block's weight: the checkpoint is sharded.
    chunks = metadata["model.student.backbone.blocks.0.attn.qkv.weight"].chunks
    assert sorted(c.offsets[0] for c in chunks) == [0, 48]
    assert main(["checkpoint", "consolidate", str(checkpoint), str(out)]) == 0
    full = torch.load(out, weights_only=False)
    assert set(full) == {"model", "optimizer", "extra", "rng"}
    assert set(full["rng"]) == {"rank0", "rank1"}
    torch.testing.assert_close(full["model"], states["gathered"], rtol=0, atol=0)
    assert (
        main(["checkpoint", "consolidate", str(run), str(tmp_path / "t.pth"), "--teacher-backbone"])
        == 0
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["checkpoint"].endswith(
        "iter_00000008"
    )
    teacher = torch.load(tmp_path / "t.pth", weights_only=True)
    assert "cls_token" in teacher and not any(
        k.startswith(("backbone", "dino_head")) for k in teacher
    )
    b = fsdp_config().backbone
    loaded = load_backbone(
        tmp_path / "t.pth",
        arch="vit",
        patch_size=b.patch_size,
        embed_dim=b.embed_dim,
        depth=b.depth,
        num_heads=b.num_heads,
        init_values=b.layerscale,
        block_chunks=0,
    )
    assert set(loaded.state_dict()) == set(teacher)


def test_activation_checkpointing_recomputes_blocks_with_the_same_loss_and_gradients():
    cfg = tiny_config(backbone=dataclasses.replace(tiny_config().backbone, drop_path_rate=0.3))
    results = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = SSLMetaArch(
            dataclasses.replace(cfg, parallel=ParallelConfig(activation_checkpointing=checkpointed))
        )
        model.train()
        prepare_model(model, model.cfg.parallel, torch.device("cpu"))
        calls = []
        model.student.backbone.blocks[0].attn.register_forward_hook(
            lambda *_, log=calls: log.append(1)
        )
        torch.manual_seed(1)  # the same stochastic-depth draws in both runs
        _, losses = model.forward_backward(fixed_batch(cfg), 0.07)
        grads = {
            n: p.grad.clone() for n, p in model.student.named_parameters() if p.grad is not None
        }
        results.append((losses, grads, len(calls)))
    (plain, plain_grads, plain_calls), (recomputed, recomputed_grads, recomputed_calls) = results
    assert recomputed_calls == 2 * plain_calls  # forward + recompute in the backward
    assert recomputed == pytest.approx(plain, rel=1e-6)
    torch.testing.assert_close(recomputed_grads, plain_grads, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_compiled_blocks_give_the_same_loss():
    cfg = tiny_config()
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = SSLMetaArch(dataclasses.replace(cfg, parallel=ParallelConfig(compile=compiled)))
        model.train()
        prepare_model(model, model.cfg.parallel, torch.device("cpu"))
        losses.append(model.forward_backward(fixed_batch(cfg), 0.07)[1]["total_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


# test_pretrain_command's tiny ViT, checkpointing every 2 iterations and keeping the default count
TINY = [
    *(a for a in COMMAND_TINY if not a.startswith(("checkpoint_every=", "keep_checkpoints="))),
    "checkpoint_every=2",
]


def test_torchrun_launches_two_fsdp_ranks(tmp_path):
    source = write_tar_shards(_images(16), str(tmp_path / "tars"), samples_per_shard=4)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "pretrain.train.loop", "--source", source, "--out", str(out)]
    command += ["--max-iterations", "3", *TINY]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [0, 1, 2]
    assert all(np.isfinite(line["total_loss"]) for line in lines)
    assert json.loads((out / "config.json").read_text())["parallel"]["strategy"] == "fsdp"
    final = ckpt.latest_checkpoint(out / "checkpoints")
    assert final.name == "iter_00000003"
    assert sorted(p.name for p in final.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    extra = torch.load(
        ckpt.consolidate_checkpoint(final, tmp_path / "all.pth"), weights_only=False
    )["extra"]
    config = json.loads(extra.pop("config"))  # the run's config travels with its checkpoints
    assert config["parallel"]["strategy"] == "fsdp"
    assert extra == {"iteration": 3, "samples_seen": 12, "world_size": 2}
