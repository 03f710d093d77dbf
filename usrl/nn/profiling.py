"""MACs and parameters a model actually uses at a given width."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from usrl.nn.layers import USBatchNorm2d, USConv2d, USGroupNorm, USLinear
from usrl.nn.width import width

_POOLS = (nn.AvgPool2d, nn.MaxPool2d)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _conv_counts(module: nn.Conv2d | USConv2d, inp: Tensor, out: Tensor) -> tuple[int, int]:
    if isinstance(module, USConv2d):
        in_c, out_c, groups = module.shape_at(module.width_control.width)
    else:
        in_c, out_c, groups = module.in_channels, module.out_channels, module.groups
    has_bias = module.bias is not None
    kh, kw = module.kernel_size
    per_out = in_c // groups * kh * kw
    macs = out[0].numel() * per_out
    params = out_c * per_out + (out_c if has_bias else 0)
    return macs, params


def _linear_counts(module: nn.Module, inp: Tensor, out: Tensor) -> tuple[int, int]:
    in_f = inp.shape[-1]
    out_f = out.shape[-1]
    macs = out[0].numel() * in_f
    return macs, in_f * out_f + (out_f if module.bias is not None else 0)


def _norm_params(module: nn.Module, inp: Tensor) -> int:
    return 2 * inp.shape[1] if getattr(module, "affine", False) else 0


def profile(model: nn.Module, input_shape: tuple[int, ...], width_value: float | None = None) -> dict[str, int]:
    """Count the multiply-accumulates and parameters ``model`` uses per sample at a width.

    ``input_shape`` is one sample's shape, without the batch dimension (e.g. ``(3, 224, 224)``).
    Counts come from the shapes the layers actually use in a forward pass at ``width_value``
    (the current width if ``None``):

    * ``macs``: multiply-accumulates of convolutions (groups included), linear layers and
      pooling (one per input element a pooling window reads). BatchNorm is excluded, as is
      conventional, since it folds into the preceding convolution. MACs are what the US-Nets
      and OFA papers call "FLOPs".
    * ``params``: the parameters the forward pass reads: the used slices of weights and biases,
      and the affine parameters of normalisation layers. A shared module counts once.
    """
    totals = {"macs": 0, "params": 0}
    seen: set[int] = set()

    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        inp = args[0]
        macs = params = 0
        if isinstance(module, (nn.Conv2d, USConv2d)):
            macs, params = _conv_counts(module, inp, out)
        elif isinstance(module, (nn.Linear, USLinear)):
            macs, params = _linear_counts(module, inp, out)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, USBatchNorm2d, USGroupNorm)):
            params = (
                _norm_params(module, inp)
                if not isinstance(module, nn.LayerNorm)
                else sum(p.numel() for p in module.parameters(recurse=False))
            )
        elif isinstance(module, _POOLS):
            k = module.kernel_size
            kh, kw = (k, k) if isinstance(k, int) else k
            macs = out[0].numel() * kh * kw
        elif isinstance(module, _ADAPTIVE_POOLS):
            macs = inp[0].numel()
        else:
            params = sum(p.numel() for p in module.parameters(recurse=False))
        totals["macs"] += int(macs)
        if id(module) not in seen:
            seen.add(id(module))
            totals["params"] += int(params)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    bns = [m for m in model.modules() if isinstance(m, USBatchNorm2d)]
    fallbacks = [(bn, bn.uncalibrated) for bn in bns]
    training = [(m, m.training) for m in model.modules()]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        model.eval()
        for bn in bns:  # only shapes matter here: let uncalibrated widths run on batch statistics
            bn.uncalibrated = "batch"
        with torch.no_grad():
            x = torch.zeros((2, *input_shape), device=device, dtype=dtype)
            if width_value is None:
                model(x)
            else:
                with width(model, width_value):
                    model(x)
    finally:
        for h in handles:
            h.remove()
        for bn, mode in fallbacks:
            bn.uncalibrated = mode
        for module, was_training in training:
            module.training = was_training
    return totals
