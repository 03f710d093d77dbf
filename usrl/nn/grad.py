"""The gradient of a sandwich step: clipped so that the full width's own step is the one a
plain one-width update would take, and (optionally) guarded so that the other widths' step
does not degrade the full width it learns from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def _norm(grads: Sequence[Tensor | None]) -> Tensor:
    present = [g for g in grads if g is not None]
    if not present:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))


def backward_clipped(losses: Sequence[Tensor], parameters: Iterable[Tensor], max_norm: float) -> list[float]:
    """Backpropagate ``losses`` (the first width's loss, then the others') and add their gradients
    into the parameters' ``.grad``, clipped by the first loss's own norm.

    The first loss's gradient is scaled by ``c = min(1, max_norm / its norm)``: the factor of
    ``torch.nn.utils.clip_grad_norm_`` on it alone. Each other loss's gradient is scaled by
    ``min(c, max_norm / its norm)``: as much as the first (the losses keep their relative weights)
    unless that would leave it over ``max_norm``. What it is for: one clip over a sandwich step's
    summed gradient lets large student gradients shrink the full width's own step (US-PPO and
    US-A2C learned slower than PPO and A2C for it); clipped this way the full width steps as a
    plain one-width update would, and the students never outweigh it. With one loss it is
    ``loss.backward()`` then ``clip_grad_norm_``, bit for bit. The losses may share a graph
    (e.g. a stem run once). Returns each gradient's norm before clipping.
    """
    if not losses:
        raise ValueError("backward_clipped needs at least one loss")
    params = [p for p in parameters if p.requires_grad]
    if len(losses) == 1:
        losses[0].backward()
        return [float(torch.nn.utils.clip_grad_norm_(params, max_norm))]
    grads = (
        torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
        for i, loss in enumerate(losses)
    )  # one loss's gradient at a time
    return _add_clipped_apart(grads, params, max_norm)


def _add_clipped_apart(
    grads: Iterable[Sequence[Tensor | None]], params: Sequence[Tensor], max_norm: float
) -> list[float]:
    """Add gradients (one sequence per loss, the first width's first) into the parameters' ``.grad``,
    clipped as :func:`backward_clipped` says; returns each gradient's norm before clipping."""
    norms: list[float] = []
    summed: list[Tensor | None] = [None] * len(params)
    leader = torch.ones(())
    for i, loss_grads in enumerate(grads):
        norm = _norm(loss_grads)
        norms.append(float(norm))
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if i == 0:
            leader = scale
        else:
            scale = torch.minimum(scale, leader)
        for j, g in enumerate(loss_grads):
            if g is not None:
                prev = summed[j]
                summed[j] = g * scale if prev is None else prev + g * scale
    for p, clipped in zip(params, summed, strict=True):
        if clipped is not None:
            p.grad = clipped if p.grad is None else p.grad + clipped
    return norms


def _dot(a: Sequence[Tensor | None], b: Sequence[Tensor | None]) -> Tensor:
    terms = [(x * y).sum() for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return a if b is None else (b if a is None else a + b)


def backward_guarded(
    first: Tensor, students: Tensor, guard: Tensor, parameters: Iterable[Tensor], max_norm: float, joint: bool
) -> tuple[list[float], bool]:
    """Add the gradients of a sandwich step (``first``: the full width's loss, ``students``: the
    other widths' summed loss) into the parameters' ``.grad``, the students' gradient first
    stripped of the part that would raise ``guard``, then clipped.

    ``guard`` is a quantity of the full width that the students' step must not raise to first
    order (US-PPO/US-A2C: minus the full width's policy entropy, or how far its outputs move
    from the students'). Where the students' descent direction ``-g_s`` has a component along
    ``grad(guard)``, that component is removed
    (``g_s -= (g_s . g_g / |g_g|^2) g_g`` when ``g_s . g_g < 0``), as gradient surgery (PCGrad) does
    between conflicting tasks; ``first``'s gradient is never changed. What it is for: the students
    learn the full width's output through weights they share with it, and where the full width's
    output is their own plus the rest (``T = S + R``), pulling ``S`` toward ``T`` moves ``T`` along
    ``R``: it sharpens the teacher's policy, which on SB3's identity tasks collapsed US-A2C's
    entropy early (``benchmarks/results/ac_sharpening.md``).

    Clipping: ``joint``, one clip of the sum to ``max_norm`` (returns its norm); otherwise as
    :func:`backward_clipped` (returns the full width's and the students' norms). The second
    value returned says whether the students' gradient was changed.
    """
    params = [p for p in parameters if p.requires_grad]
    g_first = torch.autograd.grad(first, params, retain_graph=True, allow_unused=True)
    g_students: list[Tensor | None] = list(torch.autograd.grad(students, params, retain_graph=True, allow_unused=True))
    g_guard = torch.autograd.grad(guard, params, allow_unused=True)
    dot = _dot(g_students, g_guard)
    projected = bool(dot < 0)
    if projected:
        coef = dot / _dot(g_guard, g_guard).clamp_min(1e-12)
        g_students = [_add(s, None if g is None else -coef * g) for s, g in zip(g_students, g_guard, strict=True)]
    if not joint:
        return _add_clipped_apart([g_first, g_students], params, max_norm), projected
    for p, a, b in zip(params, g_first, g_students, strict=True):
        g = _add(a, b)
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g
    return [float(torch.nn.utils.clip_grad_norm_(params, max_norm))], projected
