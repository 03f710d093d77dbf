"""The gradient of a sandwich step clipped so that the full width's own step is the one a
plain one-width update would take."""

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
    norms: list[float] = []
    summed: list[Tensor | None] = [None] * len(params)
    leader = torch.ones(())
    for i, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
        norm = _norm(grads)
        norms.append(float(norm))
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if i == 0:
            leader = scale
        else:
            scale = torch.minimum(scale, leader)
        for j, g in enumerate(grads):
            if g is not None:
                prev = summed[j]
                summed[j] = g * scale if prev is None else prev + g * scale
    for p, clipped in zip(params, summed, strict=True):
        if clipped is not None:
            p.grad = clipped if p.grad is None else p.grad + clipped
    return norms
