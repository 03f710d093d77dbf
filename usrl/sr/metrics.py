"""Image-quality metrics of the SR module: PSNR and SSIM, on RGB or on the Y channel.

Conventions (those of most SR papers, stated so numbers can be compared):
* images are float tensors ``(3, H, W)`` or ``(N, 3, H, W)`` in [0, 1]; both are
  clamped to [0, 1] and rounded to 8-bit levels first, as if saved as a PNG;
* a border of ``shave`` pixels (usually the scale) is cut from every side before measuring;
* Y is ITU-R BT.601 luma, ``16/255 + (65.481 R + 128.553 G + 24.966 B) / 255``;
* PSNR uses a peak of 1.0 and is ``inf`` for a perfect reconstruction;
* SSIM (Wang et al. 2004) uses an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  valid positions only, averaged over channels (RGB) or on Y.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def quantize(img: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image."""
    return img.clamp(0, 1).mul(255).round().div(255)


def rgb_to_y(img: Tensor) -> Tensor:
    """BT.601 luma of RGB images in [0, 1]: ``(..., 3, H, W)`` -> ``(..., 1, H, W)``."""
    w = img.new_tensor([65.481, 128.553, 24.966]).view(3, 1, 1) / 255.0
    return (img * w).sum(dim=-3, keepdim=True) + 16.0 / 255.0


def _prepare(pred: Tensor, target: Tensor, shave: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred, target = quantize(pred.double()), quantize(target.double())
    if shave > 0:
        pred, target = pred[..., shave:-shave, shave:-shave], target[..., shave:-shave, shave:-shave]
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred, target


def psnr(pred: Tensor, target: Tensor, shave: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB of ``pred`` against ``target`` (see the module's conventions); ``inf`` if equal."""
    pred, target = _prepare(pred, target, shave, y_channel)
    mse = torch.mean((pred - target) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, shave: int = 0, y_channel: bool = False) -> float:
    """Mean SSIM of ``pred`` against ``target`` (see the module's conventions)."""
    pred, target = _prepare(pred, target, shave, y_channel)
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    c = pred.shape[1]
    g = _gaussian_1d().to(pred.device)
    rows, cols = g.view(1, 1, 11, 1).expand(c, 1, 11, 1), g.view(1, 1, 1, 11).expand(c, 1, 1, 11)
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels after shaving, got {tuple(pred.shape[-2:])}")

    def blur(t: Tensor) -> Tensor:  # the 11x11 Gaussian window, as two separable passes
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())
