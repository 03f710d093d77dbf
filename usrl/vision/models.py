"""Universally slimmable MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018).

Every layer is built at full size from ``usrl.nn`` layers and uses its leading
``make_divisible(C * w, 8)`` channels at width ``w``; the RGB input and the classifier's outputs
never slim. In v2 the expanded channels stay an exact multiple (the expansion ratio) of the
block's input channels, and the final 1x1 conv to 1280 channels keeps its output at every width,
so the classifier does not slim at all. At ``w = 1`` the layers are those of the standard
architectures; at any width the channel counts are those of the standard width multiplier.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from usrl.nn import USBatchNorm2d, USConv2d, USLinear, check_width_range, make_slimmable

ARCHS = ("us_mobilenet_v1", "us_mobilenet_v2")
# the width range each architecture is trained for (US-Nets, Yu & Huang 2019)
ARCH_WIDTH_RANGES: dict[str, tuple[float, float]] = {"us_mobilenet_v1": (0.25, 1.0), "us_mobilenet_v2": (0.35, 1.0)}

# MobileNet v1: (output channels, stride) of the depthwise-separable blocks after the 32-channel stem
_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]  # fmt: skip
# MobileNet v2: expansion t, output channels c, repeats n, first stride s
_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class ConvBNAct(nn.Sequential):
    """Slimmable conv (no bias) -> BatchNorm -> ReLU/ReLU6 (or no activation)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        *,
        act: type[nn.Module] | None = nn.ReLU6,
        slim_in: bool = True,
        slim_out: bool = True,
        ratio: int | tuple[int, int] = 1,
    ) -> None:
        r_out = ratio if isinstance(ratio, int) else ratio[1]
        conv = USConv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False,
                        slim_in=slim_in, slim_out=slim_out, ratio=ratio)  # fmt: skip
        layers: list[nn.Module] = [conv, USBatchNorm2d(c_out, slim=slim_out, ratio=r_out)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNet v2's block: 1x1 expansion (ratio ``t``), 3x3 depthwise, linear 1x1 projection;
    a residual connection when the stride is 1 and the channels match."""

    def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = c_in * t
        layers: list[nn.Module] = []
        if t != 1:
            layers.append(ConvBNAct(c_in, hidden, 1, ratio=(1, t)))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, ratio=t),
            ConvBNAct(hidden, c_out, 1, act=None, ratio=(t, 1)),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class USMobileNet(nn.Module):
    """A universally slimmable MobileNet: ``features`` -> global average pool -> ``classifier``.

    ``config`` (kept on the model, saved with checkpoints) holds ``arch``, ``num_classes``,
    ``resolution`` (the input side the model is trained and profiled at; any size runs),
    ``width_range`` and ``dropout``.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, config: dict[str, Any]) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        self.config: dict[str, Any] = config
        for m in self.modules():
            if isinstance(m, USConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, USBatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Linear, USLinear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        make_slimmable(self, config["width_range"])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _config(arch: str, num_classes: int, resolution: int, width_range: tuple[float, float] | None,
            dropout: float) -> dict[str, Any]:  # fmt: skip
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if resolution < 32:
        raise ValueError(f"resolution must be >= 32 (five stride-2 stages), got {resolution}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    arch_low, arch_high = ARCH_WIDTH_RANGES[arch]
    low, high = check_width_range(*(width_range or (arch_low, arch_high)))
    if low < arch_low:
        raise ValueError(f"{arch} supports widths in [{arch_low:g}, {arch_high:g}], got a range from {low:g}")
    return {"arch": arch, "num_classes": int(num_classes), "resolution": int(resolution),
            "width_range": (low, high), "dropout": float(dropout)}  # fmt: skip


def us_mobilenet_v1(
    num_classes: int = 1000,
    resolution: int = 224,
    width_range: tuple[float, float] | None = None,
    dropout: float = 0.0,
) -> USMobileNet:
    """US-MobileNet v1 (width range 0.25-1.0 by default): a 3x3 stem, 13 depthwise-separable
    blocks (ReLU) and a classifier whose 1024 inputs slim. 569M MACs at 224x224 and ``w = 1``."""
    config = _config("us_mobilenet_v1", num_classes, resolution, width_range, dropout)
    layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.ReLU, slim_in=False)]
    c_in = 32
    for c_out, stride in _V1_BLOCKS:
        layers += [ConvBNAct(c_in, c_in, 3, stride, groups=c_in, act=nn.ReLU), ConvBNAct(c_in, c_out, 1, act=nn.ReLU)]
        c_in = c_out
    classifier = nn.Sequential(nn.Dropout(dropout), USLinear(c_in, num_classes, slim_out=False))
    return USMobileNet(nn.Sequential(*layers), classifier, config)


def us_mobilenet_v2(
    num_classes: int = 1000,
    resolution: int = 224,
    width_range: tuple[float, float] | None = None,
    dropout: float = 0.2,
) -> USMobileNet:
    """US-MobileNet v2 (width range 0.35-1.0 by default): inverted residual blocks (ReLU6),
    a final 1x1 conv to 1280 channels whose output does not slim, and a fixed classifier.
    300M MACs at 224x224 and ``w = 1``."""
    config = _config("us_mobilenet_v2", num_classes, resolution, width_range, dropout)
    layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, slim_in=False)]
    c_in = 32
    for t, c, n, s in _V2_STAGES:
        for i in range(n):
            layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
            c_in = c
    layers.append(ConvBNAct(c_in, 1280, 1, slim_out=False))
    classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
    return USMobileNet(nn.Sequential(*layers), classifier, config)


_BUILDERS = {"us_mobilenet_v1": us_mobilenet_v1, "us_mobilenet_v2": us_mobilenet_v2}


def build_model(config: dict[str, Any]) -> USMobileNet:
    """The model a ``config`` dictionary (as kept in ``model.config`` and in checkpoints) describes."""
    arch = config.get("arch")
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    kwargs = {k: config[k] for k in ("num_classes", "resolution", "width_range", "dropout") if k in config}
    if "width_range" in kwargs:
        kwargs["width_range"] = tuple(kwargs["width_range"])
    return _BUILDERS[arch](**kwargs)
