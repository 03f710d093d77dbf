"""Export one width of a slimmable model as a network of standard torch layers."""

from __future__ import annotations

import copy

import torch
from torch import nn

from usrl.nn.width import _CONTROL_ATTR, SlimmableMixin, width


def _replace_slimmable(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, SlimmableMixin):
            setattr(module, name, child.to_static())
        else:
            _replace_slimmable(child)
    module.__dict__.pop(_CONTROL_ATTR, None)


def export_fixed_width(model: nn.Module, width_value: float) -> nn.Module:
    """A copy of ``model`` at width ``width_value`` made of standard torch layers, in eval mode.

    Every slimmable layer is replaced by its ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d``
    / ``nn.GroupNorm`` counterpart holding copies of the weights used at that width (and, for
    BatchNorm, the statistics calibrated for it: calibrate first). Its output equals the
    slimmable model's at that width in eval mode.

    For use without usrl: ``torch.jit.script`` / ``torch.jit.trace`` it and ``torch.jit.save``
    the result, or ``torch.onnx.export`` it; or save its ``state_dict``: the keys are the
    original model's, the shapes those of the width, so the same architecture built from plain
    torch layers with the channel counts shown by ``print(exported)`` loads it.
    A bare slimmable layer is returned as its static counterpart.
    """
    with width(model, width_value), torch.no_grad():
        if isinstance(model, SlimmableMixin):
            return model.to_static().eval()
        exported = copy.deepcopy(model)
        _replace_slimmable(exported)
    return exported.eval()
