import pytest
import torch

from usrl.nn import get_distill_loss, kl_divergence, soft_cross_entropy

NAMES = ["kl", "soft_ce", "mse", "huber", "l1"]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_never_reach_the_teacher(name: str) -> None:
    loss_fn = get_distill_loss(name)
    teacher_param = torch.randn(4, 6, requires_grad=True)
    student = torch.randn(4, 6, requires_grad=True)
    teacher = teacher_param * 2.0  # a teacher output still attached to its graph
    loss = loss_fn(student, teacher)
    loss.backward()
    assert teacher_param.grad is None
    assert student.grad is not None and torch.count_nonzero(student.grad) > 0


@pytest.mark.parametrize("name", ["kl", "mse", "huber", "l1"])
def test_zero_when_student_equals_teacher(name: str) -> None:
    x = torch.randn(5, 7)
    assert get_distill_loss(name)(x.clone(), x).item() == pytest.approx(0.0, abs=1e-6)
    assert get_distill_loss(name)(x * 2.0 + 1.0, x).item() > 1e-3


def test_soft_ce_is_kl_plus_teacher_entropy_and_has_kl_gradient() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4)
    for temp in (1.0, 2.5):
        p = torch.softmax(t / temp, -1)
        entropy = -(p * p.log()).sum(-1).mean() * temp**2
        torch.testing.assert_close(soft_cross_entropy(s, t, temp), kl_divergence(s, t, temp) + entropy)
        g1 = torch.autograd.grad(soft_cross_entropy(s, t, temp), s)[0]
        g2 = torch.autograd.grad(kl_divergence(s, t, temp), s)[0]
        torch.testing.assert_close(g1, g2)
    e = torch.randn(3, 4, requires_grad=True)
    g = torch.autograd.grad(soft_cross_entropy(e, e.detach()), e)[0]
    assert g.abs().max() < 1e-6  # minimal at student == teacher


def test_kl_matches_torch_and_validates() -> None:
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True, reduction="batchmean"
    )
    torch.testing.assert_close(kl_divergence(s, t), ref)
    with pytest.raises(ValueError):
        kl_divergence(s, t, 0.0)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        get_distill_loss("cosine")
