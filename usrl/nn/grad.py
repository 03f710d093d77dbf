"""Gradients of several losses, each clipped by its own norm before they are summed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def backward_clipped(losses: Sequence[Tensor], parameters: Iterable[Tensor], max_norm: float) -> list[float]:
    """Backpropagate each of ``losses`` on its own, scale each one's gradient to an L2 norm of at
    most ``max_norm`` (the rule of ``torch.nn.utils.clip_grad_norm_``, over all ``parameters``),
    and add the clipped gradients into the parameters' ``.grad``.

    What it is for: in a sandwich step one clip over the summed widths' gradient lets large
    student gradients shrink the full width's own step; clipping the full width's gradient and
    the students' apart keeps the full width's step what a plain one-width update would take.
    With one loss it is ``loss.backward()`` then ``clip_grad_norm_`` (bit for bit). The losses
    may share a graph (e.g. a stem run once). Returns each gradient's norm before clipping.
    """
    if not losses:
        raise ValueError("backward_clipped needs at least one loss")
    params = [p for p in parameters if p.requires_grad]
    if len(losses) == 1:
        losses[0].backward()
        return [float(torch.nn.utils.clip_grad_norm_(params, max_norm))]
    norms: list[float] = []
    summed: list[Tensor | None] = [None] * len(params)
    for i, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
        present = [g for g in grads if g is not None]
        norm = (
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
            if present
            else torch.zeros(())
        )
        norms.append(float(norm))
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for j, g in enumerate(grads):
            if g is not None:
                prev = summed[j]
                summed[j] = g * scale if prev is None else prev + g * scale
    for p, clipped in zip(params, summed, strict=True):
        if clipped is not None:
            p.grad = clipped if p.grad is None else p.grad + clipped
    return norms
