import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrain.loss import DINOLoss, SinkhornKnopp, iBOTPatchLoss, sinkhorn_knopp


def _reference(teacher, temp, iterations):
    """SPEC section 4 step by step, single process."""
    q = torch.exp(teacher.double() / temp).t()
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def test_rows_sum_to_one_and_prototypes_share_the_mass():
    torch.manual_seed(0)
    teacher = torch.randn(12, 5)
    probs = sinkhorn_knopp(teacher, teacher_temp=0.5, n_iterations=3)
    assert probs.shape == (12, 5) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(12))  # last step: exact
    # After 3 alternations the prototype marginals are close to equal, B / K each.
    torch.testing.assert_close(probs.sum(dim=0), torch.full((5,), 12 / 5), rtol=0.05, atol=0)
    torch.testing.assert_close(probs.double(), _reference(teacher, 0.5, 3), rtol=1e-5, atol=1e-7)
    # With many iterations both marginals converge.
    many = SinkhornKnopp(n_iterations=200)(teacher, 0.5)
    torch.testing.assert_close(many.sum(dim=0), torch.full((5,), 12 / 5), rtol=1e-4, atol=0)


def test_logits_that_would_overflow_exp_stay_finite():
    torch.manual_seed(0)
    # t / temp reaches ~112: exp() overflows float32 unless the maximum is taken out first.
    teacher = 3.0 + 1.5 * torch.rand(6, 4)
    probs = sinkhorn_knopp(teacher, teacher_temp=0.04)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.double(), _reference(teacher, 0.04, 3), rtol=1e-4, atol=1e-6)


def test_empty_input_returns_empty():
    assert sinkhorn_knopp(torch.zeros(0, 4), 0.1, total_batch_size=0).shape == (0, 4)


def _worker(rank, world_size, init_file, full, counts, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        start = sum(counts[:rank])
        local = full[start : start + counts[rank]]
        # CLS-token form: equal batches, B = local rows x world size.
        equal = full.chunk(2)[rank]
        cls_probs = DINOLoss(out_dim=full.shape[1]).sinkhorn_knopp_teacher(equal, 0.3)
        # iBOT form: unequal masked counts, B = all-reduced count.
        ibot = iBOTPatchLoss(patch_out_dim=full.shape[1])
        count = torch.tensor([counts[rank]])
        patch_probs = ibot.sinkhorn_knopp_teacher(local, 0.3, count)
        # Centers: mean over the global batch.
        dino_loss = DINOLoss(out_dim=full.shape[1], center_momentum=0.0)
        dino_loss.update_center(equal)
        dino_loss.apply_center_update()
        torch.save(
            {"cls": cls_probs, "patch": patch_probs, "center": dino_loss.center},
            f"{results}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def test_sums_are_all_reduced_across_ranks(tmp_path):
    torch.manual_seed(0)
    full = torch.randn(8, 6)
    counts = [3, 5]
    results = str(tmp_path / "out")
    mp.spawn(
        _worker,
        args=(2, str(tmp_path / "init"), full, counts, results),
        nprocs=2,
        join=True,
    )
    parts = [torch.load(f"{results}.{rank}") for rank in range(2)]
    single = sinkhorn_knopp(full, 0.3)
    torch.testing.assert_close(torch.cat([p["cls"] for p in parts]), single)
    torch.testing.assert_close(torch.cat([p["patch"] for p in parts]), single)
    for part in parts:
        torch.testing.assert_close(part["center"], full.mean(dim=0, keepdim=True))
    assert not math.isclose(
        float(sinkhorn_knopp(full[:3], 0.3)[0, 0]), float(single[0, 0]), rel_tol=1e-3
    )
