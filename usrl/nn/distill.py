"""Inplace-distillation losses: a student output against a teacher output the loss detaches.

The teacher is the largest width's own output, so no gradient may flow back into it: every loss
here detaches its ``teacher`` argument itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

DistillLoss = Callable[[Tensor, Tensor], Tensor]


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) between ``softmax(logits / T)`` over the last dim, batch mean.

    Multiplied by ``T**2`` so gradient magnitudes do not shrink with the temperature (Hinton et al.).
    Zero when student and teacher agree.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t_log = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    s_log = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (t_log.exp() * (t_log - s_log)).sum(dim=-1)
    return kl.mean() * temperature**2


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy of the student against the teacher's soft labels, ``softmax(logits / T)``.

    The loss US-Nets use for classification; it has the same gradient as :func:`kl_divergence`
    and differs from it by the teacher's entropy (so it is not zero when the two agree).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t_prob = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    s_log = F.log_softmax(student_logits / temperature, dim=-1)
    return -(t_prob * s_log).sum(dim=-1).mean() * temperature**2


def mse_distill(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error to the detached teacher (values, Q-values)."""
    return F.mse_loss(student, teacher.detach())


def huber_distill(student: Tensor, teacher: Tensor, delta: float = 1.0) -> Tensor:
    """Huber (smooth L1 for ``delta = 1``) loss to the detached teacher (Q-values)."""
    return F.huber_loss(student, teacher.detach(), delta=delta)


def l1_distill(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean absolute error to the detached teacher (images, super-resolution)."""
    return F.l1_loss(student, teacher.detach())


_LOSSES: dict[str, DistillLoss] = {
    "kl": kl_divergence,
    "soft_ce": soft_cross_entropy,
    "mse": mse_distill,
    "huber": huber_distill,
    "l1": l1_distill,
}


def get_distill_loss(name: str) -> DistillLoss:
    """The distillation loss called ``name``: one of ``kl``, ``soft_ce``, ``mse``, ``huber``, ``l1``."""
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown distillation loss {name!r}; choose one of {', '.join(_LOSSES)}") from None
