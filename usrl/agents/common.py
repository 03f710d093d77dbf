"""What the US algorithms and policies share: the sandwich settings, the width generator,
acting and predicting at a width, and the guarded optimizer step."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from usrl.nn import (
    SandwichResult,
    backward_clipped,
    backward_guarded,
    get_width,
    random_widths,
    sandwich_widths,
    set_width,
    width_control,
)

WIDTH_SAMPLINGS = ("sandwich", "random")
GRAD_CLIPS = ("joint", "apart")


def check_divisor(divisor: Any) -> int:
    """``divisor`` if it is an integer >= 1, else ``ValueError``."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise ValueError(f"divisor must be an integer >= 1, got {divisor!r}")
    return divisor


def extractor_kwargs(
    extractor_class: type[BaseFeaturesExtractor], kwargs: dict[str, Any] | None, divisor: int, normalize_images: bool
) -> dict[str, Any]:
    """``features_extractor_kwargs`` with the policy's ``divisor`` passed on to usrl's extractors,
    and (as SB3 does for its image extractors) their image checks relaxed when the policy does
    not normalise images."""
    from usrl.agents.torch_layers import USCombinedExtractor, USNatureCNN

    kwargs = dict(kwargs or {})
    if issubclass(extractor_class, BaseFeaturesExtractor) and extractor_class.__module__.startswith("usrl."):
        kwargs.setdefault("divisor", divisor)
    if not normalize_images and issubclass(extractor_class, (USNatureCNN, USCombinedExtractor)):
        kwargs["normalized_image"] = True
    return kwargs


class SlimmablePolicyMixin:
    """``set_width`` / ``get_width`` for a policy whose slimmable layers share one width control."""

    def set_width(self, width: float) -> None:
        """Act and predict at ``width`` from now on (``ValueError`` outside ``width_range``)."""
        set_width(self, width)  # type: ignore[arg-type]

    def get_width(self) -> float:
        """The width the policy currently runs at."""
        return get_width(self)  # type: ignore[arg-type]


class SlimmableAlgorithmMixin:
    """Width handling of a US algorithm (put it before the SB3 class in the bases).

    Holds the sandwich settings (``n_widths``, ``distill``, ``distill_weight``, ``distill_warmup``,
    ``distill_teacher``, ``student_weight``, ``width_sampling``, ``grad_clip``), a seeded generator for the
    random widths that is saved with the model, the width used to collect experience
    (``rollout_width``), ``set_width`` and ``predict(..., width=)``.
    """

    policy: Any
    seed: int | None
    n_widths: int
    distill: str | None
    distill_weight: float
    distill_warmup: float
    distill_teacher: str
    student_weight: float
    width_sampling: str
    grad_clip: str
    rollout_width: float | None
    width_generator: th.Generator | None
    slimmable: bool

    def _init_widths(
        self,
        n_widths: int,
        distill: str | None,
        distill_modes: tuple[str | None, ...],
        distill_weight: float,
        rollout_width: float | None,
        width_sampling: str,
        student_weight: float | None = 1.0,
        distill_teacher: str = "online",
        teachers: tuple[str, ...] = ("online",),
        grad_clip: str = "joint",
        distill_warmup: float = 0.0,
    ) -> None:
        """Validate and store the sandwich settings (call before SB3's constructor)."""
        if width_sampling not in WIDTH_SAMPLINGS:
            raise ValueError(f"width_sampling must be 'sandwich' or 'random', got {width_sampling!r}")
        if isinstance(n_widths, bool) or not isinstance(n_widths, int) or n_widths < 1:
            raise ValueError(f"n_widths must be an integer >= 1, got {n_widths!r}")
        if distill not in distill_modes:
            raise ValueError(f"distill must be one of {distill_modes}, got {distill!r}")
        if isinstance(distill_weight, bool) or not (
            isinstance(distill_weight, (int, float)) and 0.0 <= distill_weight <= 1.0
        ):
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight!r}")
        if isinstance(distill_warmup, bool) or not (
            isinstance(distill_warmup, (int, float)) and 0.0 <= distill_warmup <= 1.0
        ):
            raise ValueError(f"distill_warmup must be a fraction of training in [0, 1], got {distill_warmup!r}")
        if student_weight is None:  # the students averaged: their summed weight equals the full width's
            student_weight = 1.0 / max(1, n_widths - 1)
        if isinstance(student_weight, bool) or not (
            isinstance(student_weight, (int, float)) and math.isfinite(student_weight) and student_weight > 0
        ):
            raise ValueError(f"student_weight must be a number > 0, got {student_weight!r}")
        if grad_clip not in GRAD_CLIPS:
            raise ValueError(f"grad_clip must be one of {GRAD_CLIPS}, got {grad_clip!r}")
        if distill_teacher not in teachers:
            raise ValueError(f"distill_teacher must be one of {teachers}, got {distill_teacher!r}")
        self.student_weight = float(student_weight)
        self.distill_teacher = distill_teacher
        self.n_widths = n_widths
        self.distill = distill
        self.distill_weight = float(distill_weight)
        self.distill_warmup = float(distill_warmup)
        self.width_sampling = width_sampling
        self.grad_clip = grad_clip
        self.rollout_width = rollout_width
        self.width_generator = None

    def us_settings(self) -> dict[str, Any]:
        """The sandwich settings this model trains with, resolved (``student_weight=None`` as its
        number): what a result records so that it can be told apart from one of other settings."""
        return {
            "n_widths": self.n_widths,
            "distill": self.distill,
            "distill_weight": self.distill_weight,
            "distill_warmup": self.distill_warmup,
            "student_weight": self.student_weight,
            "distill_teacher": self.distill_teacher,
            "width_sampling": self.width_sampling,
            "grad_clip": self.grad_clip,
        }

    def _distill_weight_now(self) -> float:
        """``distill_weight`` at this point of training: during the first ``distill_warmup`` of
        it the weight rises linearly from 0 (the students learn their own loss while the
        full-width teacher is still near its initialisation), then stays at ``distill_weight``."""
        if self.distill_warmup <= 0.0:
            return self.distill_weight
        done = 1.0 - float(self._current_progress_remaining)  # type: ignore[attr-defined]
        return self.distill_weight * min(1.0, max(0.0, done) / self.distill_warmup)

    def _record_distill_weight(self) -> None:
        """Log ``train/distill_weight`` while it changes (with a warm-up)."""
        if self.distill_warmup > 0.0 and self.distill is not None:
            self.logger.record("train/distill_weight", self._distill_weight_now())  # type: ignore[attr-defined]

    def _setup_widths(self, policy_class: type) -> None:
        """Check the policy, bind the rollout width and seed the width generator (after ``_setup_model``).

        A policy that is not a ``policy_class`` (a user's own SB3 policy) is trained exactly as
        the SB3 algorithm would train it, at its one width, with a warning.
        """
        self.slimmable = isinstance(self.policy, policy_class)
        if not self.slimmable:
            warnings.warn(
                f"{type(self.policy).__name__} is not slimmable (not a {policy_class.__name__}): "
                f"{type(self).__name__} trains it as SB3 does, at its one width; subclass "
                f"{policy_class.__name__} to train and run it at any width",
                UserWarning,
                stacklevel=3,
            )
            return
        control = width_control(self.policy)
        if self.rollout_width is None:
            self.rollout_width = control.high
        self.rollout_width = control.check(self.rollout_width)
        control.width = self.rollout_width
        if getattr(self, "width_generator", None) is None:  # a loaded model keeps its saved generator state
            self.width_generator = th.Generator()
            self.width_generator.manual_seed(int(self.seed) if self.seed is not None else int(np.random.randint(2**31)))

    def _restore_rollout_width(self) -> None:
        """Back to the width that collects experience, after a training step ran others."""
        assert self.rollout_width is not None  # set by _setup_widths for a slimmable policy
        width_control(self.policy).width = self.rollout_width

    def _check_slimmable(self) -> None:
        if not self.slimmable:
            raise TypeError(f"{type(self.policy).__name__} is not slimmable: its width cannot be set")

    def _step_widths(self, low: float, high: float) -> list[float]:
        """The widths of one gradient step: the sandwich (largest first), or uniform random ones."""
        draw = sandwich_widths if self.width_sampling == "sandwich" else random_widths
        return draw(self.n_widths, low, high, self.width_generator)

    def _apply_gradients(
        self, step: SandwichResult[Any], max_grad_norm: float, guard: th.Tensor | None = None
    ) -> tuple[list[float], bool]:
        """Backward of the step's width losses, gradient clipping, one optimizer step.

        ``grad_clip="joint"``: one clip over the summed widths' gradient; ``"apart"``: the full
        width's gradient clipped by its own norm, as a one-width update would be, and the other
        widths' by the same factor or by their own norm where that is smaller
        (:func:`usrl.nn.backward_clipped`; the same as ``"joint"`` for a step of one width).
        ``guard``: a quantity of the full width that the other widths' gradient must not raise
        (:func:`usrl.nn.backward_guarded`; used in a step of several widths).
        Returns the norms before clipping (full width first) and whether the guard changed the
        other widths' gradient. A non-finite loss raises
        ``FloatingPointError`` before anything is changed.
        """
        total = step.total
        assert total is not None  # the step ran without a backward per width
        if not th.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss ({total.item()}) at update {self._n_updates + 1}, "  # type: ignore[attr-defined]
                f"{self.num_timesteps} env steps"  # type: ignore[attr-defined]
            )
        self.policy.optimizer.zero_grad()
        if guard is not None and len(step.groups) == 2:
            first, students = step.groups
            joint = self.grad_clip == "joint"
            norms, changed = backward_guarded(first, students, guard, self.policy.parameters(), max_grad_norm, joint)
        else:
            groups = step.groups if self.grad_clip == "apart" else [total]
            norms, changed = backward_clipped(groups, self.policy.parameters(), max_grad_norm), False
        self.policy.optimizer.step()
        return norms, changed

    def set_width(self, width: float) -> None:
        """Act and predict at ``width`` (also the width used while collecting experience)."""
        self._check_slimmable()
        self.rollout_width = width_control(self.policy).check(width)
        self.policy.set_width(self.rollout_width)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        width: float | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; ``width`` runs this call at that width (then restores the current one)."""
        if width is None:
            return super().predict(observation, state, episode_start, deterministic)  # type: ignore[misc]
        self._check_slimmable()
        control = width_control(self.policy)
        previous = control.width
        control.set(width)
        try:
            return super().predict(observation, state, episode_start, deterministic)  # type: ignore[misc]
        finally:
            control.width = previous
