"""The method, written once: which widths a training step trains, and one sandwich step.

Every usrl trainer (US-DQN, US-PPO/US-A2C, US-MobileNet, US-WDSR) runs its gradient step
through :func:`sandwich_step`; what stays in the trainer is only what is specific to it (TD
targets, PPO's surrogate, labels, HR images).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from usrl.nn.layers import share_stem
from usrl.nn.width import check_width_range, width_control

Output = TypeVar("Output")

# A distillation loss of one student width: the loss, or the loss and named parts to log.
DistillResult = Tensor | tuple[Tensor, Mapping[str, Tensor]]


def sandwich_widths(n: int, low: float, high: float, generator: torch.Generator | None = None) -> list[float]:
    """Widths for one training step: ``[high, low]`` plus ``n - 2`` uniform random widths in between.

    ``n = 1`` gives ``[high]`` (plain training at full width) and ``n = 2`` gives ``[high, low]``.
    The largest width comes first so that it can serve as the teacher of the others.
    Pass a seeded ``torch.Generator`` for reproducible widths.
    """
    _check_n(n)
    low, high = check_width_range(low, high)
    if n == 1:
        return [high]
    middle = torch.rand(n - 2, generator=generator, dtype=torch.float64) * (high - low) + low
    return [high, low, *(float(w) for w in middle)]


def random_widths(n: int, low: float, high: float, generator: torch.Generator | None = None) -> list[float]:
    """``n`` widths drawn uniformly from ``[low, high]``: the "no sandwich rule" ablation."""
    _check_n(n)
    low, high = check_width_range(low, high)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return [float(x) for x in u * (high - low) + low]


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of sandwich widths must be an integer >= 1, got {n!r}")


@dataclass
class WidthLoss:
    """What one width of a sandwich step learned.

    ``role`` is ``"full"`` (the first width of a sandwich, the teacher), ``"low"`` (the second,
    the smallest) or ``"random"`` (the others, and every width of a random-width step).
    ``loss`` is the width's loss before ``student_weight``; ``distill`` holds its distillation
    loss under ``"loss"`` and the parts the distillation named (empty if it did not distil).
    """

    width: float
    role: str
    loss: float
    distill: dict[str, float] = field(default_factory=dict)


@dataclass
class SandwichResult(Generic[Output]):
    """The outcome of :func:`sandwich_step`.

    ``total`` is the summed loss to call ``backward`` on once (``None`` when the step ran a
    backward per width); ``first`` is the first width's output (the teacher's, in a sandwich):
    an object the model refills in place (an SB3 policy's ``Distribution``) holds the last
    width's by now, so take what is needed of it in ``own_loss`` or ``teacher``.
    ``groups`` splits ``total`` into the losses a trainer may clip apart
    (:func:`usrl.nn.backward_clipped`): in a sandwich of several widths the first width's loss
    and the other widths' weighted sum; otherwise ``[total]`` (empty with a backward per width).
    """

    total: Tensor | None
    first: Output
    widths: list[WidthLoss]
    groups: list[Tensor] = field(default_factory=list)


def _split(result: DistillResult) -> tuple[Tensor, Mapping[str, Tensor]]:
    return result if isinstance(result, tuple) else (result, {})


def _detach(output: Any) -> Any:
    if not isinstance(output, Tensor):
        raise TypeError(f"the output is a {type(output).__name__}, not a tensor: pass teacher= to make a teacher of it")
    return output.detach()


def sandwich_step(
    model: nn.Module,
    widths: Sequence[float],
    forward: Callable[[bool], Output],
    own_loss: Callable[[Output, bool], Tensor],
    distill: Callable[[Output, Any], DistillResult] | None = None,
    *,
    teacher: Callable[[Output], Any] = _detach,
    fixed_teacher: Any = None,
    distill_weight: float = 1.0,
    student_weight: float = 1.0,
    sandwich: bool = True,
    backward: Callable[[Tensor], None] | None = None,
    sync_context: Callable[[], AbstractContextManager[Any]] | None = None,
    check_finite: bool = False,
) -> SandwichResult[Output]:
    """Run one batch at each of ``widths`` with the sandwich rule and inplace distillation.

    The width of ``model`` is set to each width in turn and ``forward(learns_own)`` produces
    its output; ``learns_own`` says whether that width's loss includes ``own_loss`` (the real
    target). The first width of a sandwich (``sandwich=True``; the largest comes first, see
    :func:`sandwich_widths`) learns ``own_loss(output, True)``, and ``teacher(output)`` (by
    default the detached output) teaches the others, unless ``fixed_teacher`` is given (a
    teacher computed elsewhere, e.g. by a target network). Every other width learns
    ``distill(output, teacher)``, mixed as ``distill_weight * distill + (1 - distill_weight) *
    own_loss(output, False)``, and is weighted by ``student_weight`` in the sum. With
    ``distill=None`` every width learns ``own_loss``; with ``sandwich=False`` (random widths)
    every width learns ``own_loss`` and none is weighted or teaches.

    Two ways to get gradients:

    - ``backward=None``: the losses are summed and returned as ``total`` for one backward (and
      one optimizer step) by the caller. The fixed-input stem runs once for all widths
      (:func:`usrl.nn.share_stem`).
    - ``backward=fn``: ``fn(loss)`` is called on each width's weighted loss right after its
      forward, so one width's graph is in memory at a time (``fn`` may scale the loss for mixed
      precision); ``sync_context()`` wraps every width but the last (DDP's ``no_sync``, so the
      gradient all-reduce runs once).

    The model's width is restored to what it was, whatever happens. ``check_finite`` raises
    ``FloatingPointError`` on a non-finite width loss before its backward.
    """
    if not widths:
        raise ValueError("a sandwich step needs at least one width")
    if not 0.0 <= distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
    control = width_control(model)
    previous = control.width
    distilling = sandwich and distill is not None
    needs_own = not distilling or distill_weight < 1.0
    teacher_value = fixed_teacher
    total: Tensor | None = None
    first_loss: Tensor | None = None
    students: Tensor | None = None
    first: Any = None
    records: list[WidthLoss] = []
    stem = share_stem(model) if backward is None else contextlib.nullcontext()
    try:
        with stem:
            for i, w in enumerate(widths):
                control.width = w
                student = distilling and i > 0
                learns_own = not student or needs_own
                out = forward(learns_own)
                parts: dict[str, float] = {}
                if student:
                    assert distill is not None
                    d, named = _split(distill(out, teacher_value))
                    parts = {"loss": d.item(), **{k: v.item() for k, v in named.items()}}
                    loss = (
                        d
                        if distill_weight >= 1.0
                        else distill_weight * d + (1.0 - distill_weight) * own_loss(out, False)
                    )
                else:
                    loss = own_loss(out, i == 0)
                if i == 0:
                    first = out
                    if distilling and fixed_teacher is None and len(widths) > 1:
                        teacher_value = teacher(out)
                if check_finite and not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at width {w:.3f}")
                role = "random" if not sandwich or i > 1 else ("full" if i == 0 else "low")
                records.append(WidthLoss(float(w), role, loss.item(), parts))
                if sandwich and i > 0 and student_weight != 1.0:
                    loss = student_weight * loss
                if backward is None:
                    total = loss if total is None else total + loss
                    if sandwich and i > 0:
                        students = loss if students is None else students + loss
                    elif i == 0:
                        first_loss = loss
                    continue
                last = i == len(widths) - 1
                with sync_context() if sync_context is not None and not last else contextlib.nullcontext():
                    backward(loss)
    finally:
        control.width = previous
    groups: list[Tensor] = []
    if total is not None:
        groups = [total] if first_loss is None or students is None else [first_loss, students]
    return SandwichResult(total, first, records, groups)


class SandwichLog:
    """Means of the per-width losses over several sandwich steps, under usrl's log keys.

    The keys are the same for every trainer: ``train/loss_full_width``, ``train/loss_w<low>``
    (the smallest width, e.g. ``train/loss_w0.25``), ``train/loss_random_widths``,
    ``train/distill_loss`` and ``train/distill_<part>`` for the parts a distillation names.
    """

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = defaultdict(list)

    @classmethod
    def of(cls, *results: SandwichResult[Any]) -> SandwichLog:
        """A log of the given steps."""
        log = cls()
        for result in results:
            log.add(result)
        return log

    def add(self, result: SandwichResult[Any]) -> None:
        """Add the losses of one step."""
        for record in result.widths:
            name = {"full": "loss_full_width", "low": f"loss_w{record.width:.2f}"}.get(
                record.role, "loss_random_widths"
            )
            self._values[f"train/{name}"].append(record.loss)
            for part, value in record.distill.items():
                self._values[f"train/distill_{part}"].append(value)

    def means(self) -> dict[str, float]:
        """The mean of each key over the steps added (keys with no value left out)."""
        return {k: sum(v) / len(v) for k, v in self._values.items() if v}
