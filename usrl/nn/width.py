"""Width control for universally slimmable networks.

Every slimmable layer of a model reads its width from one shared :class:`WidthControl`.
Setting the width is therefore a single attribute write: no module traversal per forward
and none per ``set_width`` once the model is bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

DEFAULT_WIDTH_RANGE: tuple[float, float] = (0.25, 1.0)

# Attribute under which a bound model keeps its control (a plain attribute, not a buffer).
_CONTROL_ATTR = "_usrl_width_control"


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``.

    The result is at least ``min_value`` (default: ``divisor``) and never more than 10%
    below ``v``: if rounding down would lose more, one ``divisor`` is added back.
    This is how slimmable layers turn ``channels * width`` into a channel count.
    """
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def check_width_range(low: float, high: float) -> tuple[float, float]:
    """Validate a width range: finite, ``0 < low <= high <= 1``. Returns it as floats."""
    try:
        low_f, high_f = float(low), float(high)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"width range must be two numbers, got ({low!r}, {high!r})") from exc
    if not (math.isfinite(low_f) and math.isfinite(high_f)):
        raise ValueError(f"width range must be finite, got ({low!r}, {high!r})")
    if not 0.0 < low_f <= high_f <= 1.0:
        raise ValueError(f"width range must satisfy 0 < low <= high <= 1, got ({low_f}, {high_f})")
    return low_f, high_f


class WidthControl:
    """The current width of one slimmable model and the range it may take.

    Shared by every slimmable layer of the model; layers read ``control.width`` in forward.
    """

    __slots__ = ("low", "high", "width")

    def __init__(self, low: float = DEFAULT_WIDTH_RANGE[0], high: float = DEFAULT_WIDTH_RANGE[1]) -> None:
        self.low, self.high = check_width_range(low, high)
        self.width: float = self.high

    def check(self, w: float) -> float:
        """Return ``w`` as a float if it lies in ``[low, high]``; raise ``ValueError`` otherwise."""
        try:
            w_f = float(w)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"width must be a number in [{self.low}, {self.high}], got {w!r}") from exc
        if not math.isfinite(w_f) or not self.low <= w_f <= self.high:
            raise ValueError(f"width must be a finite number in [{self.low}, {self.high}], got {w!r}")
        return w_f

    def set(self, w: float) -> None:
        """Validate and set the width."""
        self.width = self.check(w)

    def __getstate__(self) -> tuple[float, float, float]:
        return (self.low, self.high, self.width)

    def __setstate__(self, state: tuple[float, float, float]) -> None:
        self.low, self.high, self.width = state

    def __repr__(self) -> str:
        return f"WidthControl(low={self.low}, high={self.high}, width={self.width})"


class SlimmableMixin:
    """Marks a module whose channels follow a :class:`WidthControl`.

    Subclasses call :meth:`_init_width` in their constructor and implement ``to_static``.
    """

    width_control: WidthControl

    def _init_width(self) -> None:
        # A layer starts with a control of its own; make_slimmable() rebinds it to the model's.
        object.__setattr__(self, "width_control", WidthControl())

    def to_static(self) -> nn.Module:  # pragma: no cover - interface
        """A standard torch module holding copies of the weights used at the current width."""
        raise NotImplementedError


def slimmable_modules(model: nn.Module) -> list[SlimmableMixin]:
    """All slimmable layers in ``model`` (including ``model`` itself), in module order."""
    return [m for m in model.modules() if isinstance(m, SlimmableMixin)]


def make_slimmable(model: nn.Module, width_range: tuple[float, float] = DEFAULT_WIDTH_RANGE) -> nn.Module:
    """Bind every slimmable layer of ``model`` to one :class:`WidthControl` with ``width_range``.

    Call it once after building a model (the usrl model classes do it themselves), and again
    if slimmable layers are added later. The width starts at the top of the range.
    Returns ``model``.
    """
    control = WidthControl(*width_range)
    layers = slimmable_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no slimmable layers to bind")
    for layer in layers:
        object.__setattr__(layer, "width_control", control)
    object.__setattr__(model, _CONTROL_ATTR, control)
    return model


def width_control(model: nn.Module) -> WidthControl:
    """The :class:`WidthControl` of ``model``.

    A model that was never bound gets bound here with the default range (0.25, 1.0) if all its
    slimmable layers still have separate controls; if they already share one, that one is used.
    """
    control = model.__dict__.get(_CONTROL_ATTR)
    if control is not None:
        return control
    if isinstance(model, SlimmableMixin) and not any(isinstance(m, SlimmableMixin) for m in list(model.modules())[1:]):
        return model.width_control
    layers = slimmable_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no slimmable layers; its width cannot be set")
    controls = {id(layer.width_control): layer.width_control for layer in layers}
    if len(controls) == 1:
        control = next(iter(controls.values()))
        object.__setattr__(model, _CONTROL_ATTR, control)
        return control
    return width_control(make_slimmable(model))


def set_width(model: nn.Module, w: float) -> None:
    """Run ``model`` at width ``w`` from now on. ``ValueError`` if ``w`` is outside its range."""
    width_control(model).set(w)


def get_width(model: nn.Module) -> float:
    """The width ``model`` currently runs at."""
    return width_control(model).width


def get_width_range(model: nn.Module) -> tuple[float, float]:
    """The ``(low, high)`` width range of ``model``."""
    control = width_control(model)
    return control.low, control.high


@contextmanager
def width(model: nn.Module, w: float) -> Iterator[nn.Module]:
    """Context manager: run ``model`` at width ``w`` inside the block, then restore the old width."""
    control = width_control(model)
    previous = control.width
    control.set(w)
    try:
        yield model
    finally:
        control.width = previous


def slim_channels(full: int, w: float, divisor: int = 8, ratio: int = 1) -> int:
    """Channels a layer of ``full`` channels uses at width ``w``.

    ``ratio`` keeps the count an exact multiple of ``ratio`` (MobileNetV2's expansion, or the
    H*W features per channel after a flatten): ``make_divisible(full / ratio * w) * ratio``.
    Never more than ``full``; ``full`` itself at ``w = 1``.
    """
    if w >= 1.0:
        return full
    return min(full, make_divisible(full / ratio * w, divisor) * ratio)
