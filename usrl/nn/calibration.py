"""BatchNorm calibration: exact per-width statistics computed after training."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn

from usrl.nn.layers import USBatchNorm2d, width_key
from usrl.nn.width import width


def _default_forward(model: nn.Module, batch: Any) -> Any:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    device = next((p.device for p in model.parameters()), None)
    if isinstance(x, Tensor) and device is not None:
        x = x.to(device)
    return model(x)


def bn_layers(model: nn.Module) -> list[USBatchNorm2d]:
    """The :class:`USBatchNorm2d` layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, USBatchNorm2d)]


def calibrate_bn(
    model: nn.Module,
    batches: Iterable[Any],
    width_value: float,
    num_batches: int | None = None,
    forward: Callable[[nn.Module, Any], Any] = _default_forward,
) -> int:
    """Compute the BatchNorm statistics of ``model`` at width ``width_value``.

    Runs up to ``num_batches`` batches (all of ``batches`` if ``None``) without gradients. Each
    :class:`USBatchNorm2d` normalises with the batch's own statistics, as in training, while it
    accumulates the exact mean and (unbiased) variance of its inputs over all samples, every
    sample weighing the same. The result replaces that width's statistics; other widths keep
    theirs, so returning to a calibrated width needs no new calibration. No weight changes, the
    model's width and the train/eval mode of every module are restored, and dropout is off.

    ``batches`` yields input tensors or ``(input, target)`` pairs; ``forward(model, batch)``
    can be given for other input structures. Returns the number of batches used (0 and nothing
    done for a model without BatchNorm). Raises ``ValueError`` if no batch was available.
    """
    layers = bn_layers(model)
    if not layers:
        return 0
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    modes = [(m, m.training) for m in model.modules()]
    used = 0
    try:
        with width(model, width_value), torch.no_grad():
            model.eval()
            for layer in layers:
                layer.begin_calibration()
            for batch in islice(batches, num_batches):
                forward(model, batch)
                used += 1
            if used == 0:
                raise ValueError("calibrate_bn needs at least one batch")
            for layer in layers:
                layer.end_calibration(width_value)
    finally:
        for layer in layers:
            layer.abort_calibration()
        for module, mode in modes:
            module.training = mode
    return used


def is_calibrated(model: nn.Module, width_value: float) -> bool:
    """True if every BatchNorm layer of ``model`` has statistics for ``width_value`` (or there is none)."""
    key = width_key(width_value)
    return all(key in layer.stats for layer in bn_layers(model))


def clear_bn_calibration(model: nn.Module) -> None:
    """Forget the calibrated statistics of every width."""
    for layer in bn_layers(model):
        layer.stats.clear()
