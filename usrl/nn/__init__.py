"""The slimmable core of usrl: layers, width control, sandwich rule, distillation, BN
calibration, profiling and fixed-width export. Depends only on torch."""

from usrl.nn.calibration import bn_layers, calibrate_bn, clear_bn_calibration, is_calibrated
from usrl.nn.distill import (
    get_distill_loss,
    huber_distill,
    kl_divergence,
    l1_distill,
    mse_distill,
    soft_cross_entropy,
)
from usrl.nn.export import export_fixed_width
from usrl.nn.grad import backward_clipped, backward_guarded
from usrl.nn.layers import USBatchNorm2d, USConv2d, USGroupNorm, USLinear, USWNConv2d, share_stem
from usrl.nn.profiling import profile
from usrl.nn.sandwich import SandwichLog, SandwichResult, WidthLoss, random_widths, sandwich_step, sandwich_widths
from usrl.nn.width import (
    DEFAULT_WIDTH_RANGE,
    SlimmableMixin,
    WidthControl,
    check_width_range,
    get_width,
    get_width_range,
    make_divisible,
    make_slimmable,
    set_width,
    slim_channels,
    slimmable_modules,
    width,
    width_control,
)

__all__ = [
    "DEFAULT_WIDTH_RANGE",
    "SandwichLog",
    "SandwichResult",
    "SlimmableMixin",
    "USBatchNorm2d",
    "USConv2d",
    "USGroupNorm",
    "USLinear",
    "USWNConv2d",
    "WidthControl",
    "WidthLoss",
    "backward_clipped",
    "backward_guarded",
    "bn_layers",
    "calibrate_bn",
    "check_width_range",
    "clear_bn_calibration",
    "export_fixed_width",
    "get_distill_loss",
    "get_width",
    "get_width_range",
    "huber_distill",
    "is_calibrated",
    "kl_divergence",
    "l1_distill",
    "make_divisible",
    "make_slimmable",
    "mse_distill",
    "profile",
    "random_widths",
    "sandwich_step",
    "sandwich_widths",
    "set_width",
    "share_stem",
    "slim_channels",
    "slimmable_modules",
    "soft_cross_entropy",
    "width",
    "width_control",
]
