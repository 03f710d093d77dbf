"""Image classification with universally slimmable MobileNets (US-MobileNet v1/v2).

``python -m usrl.vision.train`` / ``evaluate`` / ``export`` / ``make_demo_data``; depends on
``usrl.nn`` only (and Pillow for images).
"""

from usrl.vision.checkpoint import load_model
from usrl.vision.models import ARCHS, USMobileNet, build_model, us_mobilenet_v1, us_mobilenet_v2

__all__ = ["ARCHS", "USMobileNet", "build_model", "load_model", "us_mobilenet_v1", "us_mobilenet_v2"]
