"""Write a small SR dataset in DIV2K's layout from the colour images shipped with scikit-image.

    python -m usrl.sr.make_demo_data data/sr_demo

Train: astronaut, coffee, immunohistochemistry, hubble_deep_field, retina (halved), the left
view of stereo_motorcycle. Valid (held out): chelsea, rocket. Writes DIV2K_<split>_HR/ and the
bicubic LR images for scales 2, 3 and 4 (DIV2K_<split>_LR_bicubic/X<s>/); needs scikit-image
(``pip install -e ".[demo]"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from usrl.sr.data import bicubic_downscale, bicubic_resize, crop_to_scale, hr_dir, lr_dir
from usrl.utils import UsageError, UsageParser, atomic_write, cli_main

TRAIN = ["astronaut", "coffee", "immunohistochemistry", "hubble_deep_field", "retina", "stereo_motorcycle"]
VALID = ["chelsea", "rocket"]
LR_SCALES = (2, 3, 4)


def _image(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    img = np.asarray(img)[..., :3]
    if name == "retina":  # 1411 x 1411: halve it to keep the demo fast
        img = bicubic_resize(img, (img.shape[1] // 2, img.shape[0] // 2))
    return crop_to_scale(img, 12)  # divisible by every scale


def _save_png(path: Path, img: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(img).save(tmp, format="PNG"), suffix=".png")


def write_demo(root: Path, with_lr: bool = True) -> dict[str, list[str]]:
    """Write the demo dataset under ``root``; returns the image names of each split."""
    splits = {"train": TRAIN, "valid": VALID}
    for split, names in splits.items():
        for i, name in enumerate(names):
            stem = f"{i + 1:04d}_{name}"
            hr = _image(name)
            _save_png(hr_dir(root, split) / f"{stem}.png", hr)
            if with_lr:
                for s in LR_SCALES:
                    _save_png(lr_dir(root, split, s) / f"{stem}x{s}.png", bicubic_downscale(hr, s))
    return splits


def _run(args: argparse.Namespace) -> int:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        raise UsageError('scikit-image is needed for the demo images: pip install -e ".[demo]"') from None
    out = Path(args.out)
    if hr_dir(out, "train").exists():
        raise UsageError(f"{out} already holds a dataset")
    splits = write_demo(out, with_lr=not args.hr_only)
    print(f"Wrote {len(splits['train'])} train and {len(splits['valid'])} valid images to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.sr.make_demo_data``."""
    p = UsageParser(prog="python -m usrl.sr.make_demo_data", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out", help="folder to write (DIV2K layout)")
    p.add_argument("--hr-only", action="store_true", help="no LR folders: training makes LR images on the fly")
    return cli_main("usrl.sr.make_demo_data", lambda: _run(p.parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
