"""Super-resolution with universally slimmable WDSR networks (no BatchNorm).

``python -m usrl.sr.train`` / ``evaluate`` / ``upscale`` / ``make_demo_data``; depends on
``usrl.nn`` only (and Pillow for images).
"""

from usrl.sr.checkpoint import load_model
from usrl.sr.metrics import psnr, rgb_to_y, ssim
from usrl.sr.models import WDSR, build_model, wdsr_a, wdsr_b

__all__ = ["WDSR", "build_model", "load_model", "psnr", "rgb_to_y", "ssim", "wdsr_a", "wdsr_b"]
