import torch
import torch.nn.functional as F

from pretrain.loss import DINOLoss


def test_identical_distributions_give_their_entropy():
    torch.manual_seed(0)
    student = torch.randn(6, 10)
    teacher_probs = F.softmax(student / 0.1, dim=-1)
    entropy = -(teacher_probs * teacher_probs.log()).sum(dim=-1).mean()
    loss = DINOLoss(out_dim=10, student_temp=0.1)([student], [teacher_probs])
    torch.testing.assert_close(loss, entropy)


def test_sums_cross_entropy_over_all_pairs():
    torch.manual_seed(0)
    students = [torch.randn(4, 7) for _ in range(3)]
    teachers = [F.softmax(torch.randn(4, 7), dim=-1) for _ in range(2)]
    expected = sum(
        -(t * F.log_softmax(s / 0.1, dim=-1)).sum(-1).mean() for s in students for t in teachers
    )
    torch.testing.assert_close(DINOLoss(out_dim=7)(students, teachers), expected)


def test_one_hot_target_is_student_negative_log_likelihood():
    student = torch.tensor([[0.0, 0.1, 0.0]])
    target = torch.tensor([[0.0, 1.0, 0.0]])
    loss = DINOLoss(out_dim=3, student_temp=0.1)([student], [target])
    expected = -torch.log(torch.exp(torch.tensor(1.0)) / (2 + torch.exp(torch.tensor(1.0))))
    torch.testing.assert_close(loss, expected)


def test_softmax_centering_applies_ema_center_lazily():
    loss = DINOLoss(out_dim=3, center_momentum=0.9)
    teacher = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    first = loss.softmax_center_teacher(teacher, teacher_temp=0.5)
    torch.testing.assert_close(first, F.softmax(teacher / 0.5, dim=-1))  # center still 0
    loss.update_center(teacher)
    assert torch.equal(loss.center, torch.zeros(1, 3))  # not applied before the next use
    second = loss.softmax_center_teacher(teacher, teacher_temp=0.5)
    center = 0.1 * teacher.mean(dim=0, keepdim=True)
    torch.testing.assert_close(loss.center, center)
    torch.testing.assert_close(second, F.softmax((teacher - center) / 0.5, dim=-1))
    torch.testing.assert_close(second.sum(-1), torch.ones(2))


def test_gradient_flows_to_student_only():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = F.softmax(torch.randn(4, 5), dim=-1)
    DINOLoss(out_dim=5)([student], [teacher]).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
