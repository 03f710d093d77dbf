"""Choosing the width at runtime: the widest width whose latency fits a budget.

:class:`WidthController` picks from a :class:`~usrl.deploy.latency.LatencyProfile`'s Pareto
widths. Offline it trusts the profile; online it also watches the latencies of the calls it
times and scales the profile by how much slower (or faster) the machine is now than when it was
profiled, with hysteresis so that one slow call does not make it flap between widths.
:class:`BudgetedModule` (any slimmable ``nn.Module``: a classifier, an SR net) and
:class:`BudgetedAgent` (a US algorithm's ``predict``) run every call at the controller's width
and report its latency back.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from usrl.deploy.latency import LatencyProfile
from usrl.nn import width_control


class WidthController:
    """The widest Pareto width of ``profile`` whose expected latency fits ``budget_ms``.

    Expected latency = the profile's median at that width x the current slowdown (1 offline).
    Online (``online=True``), each :meth:`observe`\\ d latency updates the slowdown as an
    exponential average (``smoothing``) of observed / profiled latency at the width that ran.
    The controller moves to a narrower width as soon as the current one no longer fits, and to a
    wider one only when it fits with ``headroom`` to spare (hysteresis). ``margin`` keeps the
    expected latency that much below the budget (0.1: aim at 90% of it).

    A budget below the narrowest width's latency is a ``ValueError``, unless
    ``fallback="narrowest"``: then the narrowest width runs and :attr:`fits` is False.
    """

    def __init__(
        self,
        profile: LatencyProfile,
        budget_ms: float,
        online: bool = False,
        margin: float = 0.1,
        smoothing: float = 0.1,
        headroom: float = 0.15,
        fallback: str = "error",
    ) -> None:
        if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0):
            raise ValueError(f"the latency budget must be a positive number of ms, got {budget_ms!r}")
        if not 0 <= margin < 1 or not 0 < smoothing <= 1 or headroom < 0:
            raise ValueError("need 0 <= margin < 1, 0 < smoothing <= 1 and headroom >= 0")
        if fallback not in ("error", "narrowest"):
            raise ValueError(f"fallback must be 'error' or 'narrowest', got {fallback!r}")
        self.profile = profile
        self.budget_ms = float(budget_ms)
        self.online = online
        self.margin, self.smoothing, self.headroom = margin, smoothing, headroom
        self.fallback = fallback
        self.widths = sorted(profile.pareto or [r.width for r in profile.rows])
        self._median = {w: profile.row(w).median_ms for w in self.widths}
        self.slowdown = 1.0
        self.calls = 0
        self.misses = 0
        narrowest = self._median[self.widths[0]]
        if narrowest > self._target() and fallback == "error":
            raise ValueError(
                f"the latency budget {self.budget_ms:g} ms (aiming at {self._target():.3g} ms with margin {margin:g}) "
                f"is below the narrowest width's {narrowest:.3g} ms (width {self.widths[0]:g}); "
                "use a larger budget or fallback='narrowest'"
            )
        self.width = self._widest_fitting(1.0)

    def _target(self) -> float:
        return self.budget_ms * (1.0 - self.margin)

    def _widest_fitting(self, spare: float) -> float:
        fitting = [w for w in self.widths if self._median[w] * self.slowdown * spare <= self._target()]
        return fitting[-1] if fitting else self.widths[0]

    @property
    def fits(self) -> bool:
        """Whether the current width is expected to fit the budget."""
        return self._median[self.width] * self.slowdown <= self._target()

    def expected_ms(self, width: float | None = None) -> float:
        """Expected latency of a call at ``width`` (default: the current width) now."""
        return self._median[self.width if width is None else width] * self.slowdown

    def observe(self, latency_ms: float) -> float:
        """Record one call's latency at the current width; returns the width for the next call."""
        self.calls += 1
        if latency_ms > self.budget_ms:
            self.misses += 1
        if not self.online or not math.isfinite(latency_ms) or latency_ms <= 0:
            return self.width
        ratio = latency_ms / self._median[self.width]
        self.slowdown += self.smoothing * (ratio - self.slowdown)
        if self._median[self.width] * self.slowdown > self._target():
            self.width = self._widest_fitting(1.0)
        else:
            wider = self._widest_fitting(1.0 + self.headroom)
            if wider > self.width:
                self.width = wider
        return self.width

    @property
    def miss_rate(self) -> float:
        """Fraction of observed calls over the budget."""
        return self.misses / self.calls if self.calls else 0.0


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class BudgetedModule(nn.Module):
    """A slimmable module run at its controller's width; each call is timed and reported."""

    def __init__(self, module: nn.Module, controller: WidthController) -> None:
        super().__init__()
        self.module = module
        self.controller = controller
        self.last_ms = 0.0
        self.last_width = controller.width

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        control = width_control(self.module)
        device = next(self.module.parameters()).device
        control.width = self.last_width = self.controller.width
        _sync(device)
        t0 = time.perf_counter()
        out = self.module(*args, **kwargs)
        _sync(device)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        self.controller.observe(self.last_ms)
        return out


class BudgetedAgent:
    """A US algorithm (``USDQN``, ``USPPO``, ``USA2C``) acting within a latency budget:
    :meth:`predict` is the model's ``predict`` at the controller's width, timed and reported."""

    def __init__(self, model: Any, controller: WidthController) -> None:
        self.model = model
        self.controller = controller
        self.last_ms = 0.0
        self.last_width = controller.width

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[Any, Any]:
        self.last_width = self.controller.width
        t0 = time.perf_counter()
        out = self.model.predict(observation, state, episode_start, deterministic, width=self.last_width)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        self.controller.observe(self.last_ms)
        return out
