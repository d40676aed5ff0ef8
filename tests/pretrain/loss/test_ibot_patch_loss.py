import torch
import torch.nn.functional as F

from pretrain.loss import iBOTPatchLoss, masks_weight_from_masks


def _token_ce(student, teacher, temp=0.1):
    return -(teacher * F.log_softmax(student / temp, dim=-1)).sum(-1)


def test_per_image_weighting_on_a_hand_case():
    torch.manual_seed(0)
    # 3 images of 4 patches: image 0 has 1 masked patch, image 1 has 3, image 2 none.
    masks = torch.tensor(
        [[False, True, False, False], [True, True, False, True], [False, False, False, False]]
    )
    student = torch.randn(3, 4, 6)
    teacher = F.softmax(torch.randn(3, 4, 6), dim=-1)
    ce = _token_ce(student, teacher)
    expected = (ce[0, 1] / 1 + (ce[1, 0] + ce[1, 1] + ce[1, 3]) / 3 + 0.0) / 3

    loss = iBOTPatchLoss(patch_out_dim=6)
    torch.testing.assert_close(loss(student, teacher, masks), expected)
    weights = masks_weight_from_masks(masks)
    torch.testing.assert_close(weights, torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3]))
    gathered = loss.forward_masked(student[masks], teacher[masks], masks)
    torch.testing.assert_close(gathered, expected)


def test_padded_gathered_tokens_are_trimmed():
    torch.manual_seed(0)
    masks = torch.tensor([[True, False], [True, True]])
    student, teacher = torch.randn(5, 4), F.softmax(torch.randn(5, 4), dim=-1)  # 3 real + 2 pad
    loss = iBOTPatchLoss(patch_out_dim=4)
    padded = loss.forward_masked(student, teacher, masks, n_masked_patches=3)
    exact = loss.forward_masked(student[:3], teacher[:3], masks)
    torch.testing.assert_close(padded, exact)


def test_no_masked_patch_gives_zero_not_nan():
    loss = iBOTPatchLoss(patch_out_dim=5)
    masks = torch.zeros(4, 9, dtype=torch.bool)
    student = torch.randn(0, 5, requires_grad=True)
    teacher = torch.zeros(0, 5)
    value = loss.forward_masked(student, teacher, masks)
    assert torch.isfinite(value) and value.item() == 0.0
    value.backward()
    dense = loss(torch.randn(4, 9, 5), F.softmax(torch.randn(4, 9, 5), -1), masks)
    assert torch.isfinite(dense) and dense.item() == 0.0

    loss.update_center(teacher)
    centered = loss.softmax_center_teacher(teacher, 0.07)
    assert centered.shape == (0, 5)
    assert torch.equal(loss.center, torch.zeros(1, 5))  # empty batch leaves it unchanged
    assert loss.sinkhorn_knopp_teacher(teacher, 0.07, torch.tensor([0])).shape == (0, 5)


def test_center_is_ema_of_masked_token_mean():
    loss = iBOTPatchLoss(patch_out_dim=2, center_momentum=0.9)
    tokens = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    loss.update_center(tokens)
    loss.apply_center_update()
    torch.testing.assert_close(loss.center, torch.tensor([[0.2, 0.1]]))
