"""Universally slimmable WDSR-A and WDSR-B (Yu et al. 2018, "Wide Activation for Efficient and
Accurate Image Super-Resolution"): no BatchNorm, weight normalisation, pixel-shuffle upsampling
and a global skip branch."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from usrl.nn import DEFAULT_WIDTH_RANGE, USWNConv2d, check_width_range, make_slimmable

# mean RGB of DIV2K's training images, in [0, 1] (subtracted at the input, added at the output)
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
ARCHS = ("wdsr_a", "wdsr_b")
SCALES = (2, 3, 4)
LR_SIZE = (320, 180)
"""The LR input (width, height) that MACs are reported for unless told: a 640x360 output at x2."""


def _cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel (a = -0.5, as PIL's bicubic)."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_upsampling_weight(scale: int, size: int = 5) -> Tensor:
    """A ``(3 * scale**2, 3, size, size)`` conv weight that, followed by ``PixelShuffle(scale)``,
    upsamples RGB images bicubically (pixel centres aligned, as PIL and ``align_corners=False``)."""
    r = size // 2
    weight = torch.zeros(3 * scale * scale, 3, size, size)
    taps = []
    for i in range(scale):
        t = (i + 0.5) / scale - 0.5  # the output sub-pixel's offset from its LR pixel centre
        w = torch.tensor([_cubic(k - t) for k in range(-r, r + 1)])
        taps.append(w / w.sum())
    for c in range(3):
        for i in range(scale):
            for j in range(scale):
                weight[c * scale * scale + i * scale + j, c] = torch.outer(taps[i], taps[j])
    return weight


def _conv(
    c_in: int, c_out: int, k: int, *, slim_in: bool = True, slim_out: bool = True, divisor: int = 1
) -> USWNConv2d:
    return USWNConv2d(c_in, c_out, k, padding=k // 2, slim_in=slim_in, slim_out=slim_out, divisor=divisor)


class _Block(nn.Module):
    """A wide-activation residual block: ``x + res_scale * body(x)``."""

    def __init__(self, body: list[nn.Module], res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.body(x)


class WDSR(nn.Module):
    """A universally slimmable WDSR network mapping an LR RGB image in [0, 1] to its ``scale``-times
    larger HR estimate (not clamped; clamp for display).

    * ``arch="wdsr_a"``: blocks conv3x3 (``n_feats`` -> ``n_feats * expand``), ReLU, conv3x3 back.
    * ``arch="wdsr_b"``: blocks conv1x1 (-> ``n_feats * expand``), ReLU, conv1x1 (->
      ``int(n_feats * linear)``), conv3x3 back to ``n_feats``.

    The network starts as bicubic upsampling (see ``_init_weights``). Every conv is weight-normalised (:class:`~usrl.nn.USWNConv2d`). The head's input (RGB),
    the tail's output (``3 * scale**2`` channels before the pixel shuffle) and the whole 5x5
    skip branch never slim, so the pixel-shuffle grouping is the same at every width; the
    features, the wide activations and the bottleneck slim with the width.
    """

    rgb_mean: Tensor

    def __init__(
        self,
        arch: str = "wdsr_a",
        scale: int = 2,
        n_feats: int = 32,
        n_resblocks: int = 16,
        expand: int | None = None,
        linear: float = 0.8,
        res_scale: float = 1.0,
        width_range: tuple[float, float] = DEFAULT_WIDTH_RANGE,
        divisor: int = 1,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        expand = expand if expand is not None else (4 if arch == "wdsr_a" else 6)
        self.config: dict[str, Any] = dict(
            arch=arch, scale=scale, n_feats=n_feats, n_resblocks=n_resblocks, expand=expand, linear=linear,
            res_scale=res_scale, width_range=tuple(check_width_range(*width_range)), divisor=divisor,
            rgb_mean=tuple(rgb_mean),
        )  # fmt: skip
        self.scale = scale
        self.register_buffer("rgb_mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1))
        d = divisor
        out_c = 3 * scale * scale
        self.head = _conv(3, n_feats, 3, slim_in=False, divisor=d)
        wide = n_feats * expand
        blocks = []
        for _ in range(n_resblocks):
            if arch == "wdsr_a":
                body = [_conv(n_feats, wide, 3, divisor=d), nn.ReLU(inplace=True), _conv(wide, n_feats, 3, divisor=d)]
            else:
                lin = int(n_feats * linear)
                body = [_conv(n_feats, wide, 1, divisor=d), nn.ReLU(inplace=True), _conv(wide, lin, 1, divisor=d),
                        _conv(lin, n_feats, 3, divisor=d)]  # fmt: skip
            blocks.append(_Block(body, res_scale))
        self.body = nn.Sequential(*blocks)
        self.tail = nn.Sequential(_conv(n_feats, out_c, 3, slim_out=False, divisor=d), nn.PixelShuffle(scale))
        # the skip branch pads by replicating edge pixels (as image resizers do), not with zeros
        skip_conv = USWNConv2d(3, out_c, 5, padding=0, slim_in=False, slim_out=False, divisor=d)
        self.skip = nn.Sequential(nn.ReplicationPad2d(2), skip_conv, nn.PixelShuffle(scale))
        self._init_weights()
        make_slimmable(self, self.config["width_range"])

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Start as bicubic upsampling: the skip branch gets the bicubic kernel, the body's
        contribution starts at zero (the tail's weight-norm scale g = 0; g learns first), so training learns the residual detail."""
        skip, tail = cast(USWNConv2d, self.skip[1]), cast(USWNConv2d, self.tail[0])
        skip.weight.copy_(bicubic_upsampling_weight(self.scale, skip.kernel_size[0]))
        skip.weight_g.copy_(skip.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        assert skip.bias is not None and tail.bias is not None
        skip.bias.zero_()
        tail.weight_g.zero_()
        tail.bias.zero_()

    def forward(self, x: Tensor, skip_grad: bool = True) -> Tensor:
        """Upscale ``x``. ``skip_grad=False`` computes the skip branch, which is the same at every
        width, without gradient: for the distilled widths, whose target (the full width's detached
        output) contains that very branch, its gradient would only be noise."""
        x = x - self.rgb_mean
        if skip_grad:
            skip = self.skip(x)
        else:
            with torch.no_grad():
                skip = self.skip(x)
        return self.tail(self.body(self.head(x))) + skip + self.rgb_mean


def build_model(config: dict[str, Any]) -> WDSR:
    """A :class:`WDSR` from its ``config`` (as stored in checkpoints)."""
    return WDSR(**config)


def wdsr_a(scale: int = 2, **kwargs: Any) -> WDSR:
    """US-WDSR-A baseline: 32 features, 16 blocks, wide activations of 128 (x4)."""
    return WDSR("wdsr_a", scale, **kwargs)


def wdsr_b(scale: int = 2, **kwargs: Any) -> WDSR:
    """US-WDSR-B baseline: 32 features, 16 blocks, wide activations of 192 (x6), bottleneck 25 (x0.8)."""
    return WDSR("wdsr_b", scale, **kwargs)
