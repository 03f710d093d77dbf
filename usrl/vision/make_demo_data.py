"""Write a small 10-class image-classification task as an ImageFolder tree from scikit-learn's
handwritten digits (1797 8x8 images that ship with the package).

    python -m usrl.vision.make_demo_data data/digits

Each digit is upsampled (bicubic) to ``--size`` pixels, drawn in a random dark colour on a random
light background colour and given pixel noise, so the task needs colour-invariant shape features. A stratified split (``--val-fraction``, fixed seed) goes
to ``train/<digit>/`` and ``val/<digit>/`` as PNG files. Needs scikit-learn
(``pip install -e ".[demo]"``).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from usrl.utils import UsageError, UsageParser, atomic_write, cli_main


def render_digits(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All of scikit-learn's digits as ``(N, size, size, 3)`` uint8 RGB images, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    images = np.empty((len(digits.images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(digits.images):
        ink = np.asarray(
            Image.fromarray((img / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        )
        alpha = (ink.astype(np.float32) / 255.0)[..., None]
        fg, bg = rng.uniform(0, 110, 3), rng.uniform(145, 255, 3)  # dark ink on a light paper, colours vary
        rgb = alpha * fg + (1 - alpha) * bg + rng.normal(0, 12, (size, size, 3))
        images[i] = np.clip(rgb, 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def write_demo(root: Path, size: int = 36, val_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Write the ImageFolder tree under ``root``; returns the number of images per split."""
    images, labels = render_digits(size, seed)
    rng = np.random.default_rng(seed + 1)
    counts = {"train": 0, "val": 0}
    for digit in range(10):
        index = rng.permutation(np.flatnonzero(labels == digit))
        n_val = max(1, round(len(index) * val_fraction))
        for split, part in (("val", index[:n_val]), ("train", index[n_val:])):
            for i in part:
                save = functools.partial(Image.fromarray(images[i]).save, format="PNG")
                atomic_write(root / split / str(digit) / f"{i:04d}.png", save, suffix=".png")
            counts[split] += len(part)
    return counts


def _run(args: argparse.Namespace) -> int:
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        raise UsageError('scikit-learn is needed for the demo images: pip install -e ".[demo]"') from None
    if args.size < 8:
        raise UsageError(f"--size must be >= 8, got {args.size}")
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    out = Path(args.out)
    if (out / "train").exists() or (out / "val").exists():
        raise UsageError(f"{out} already holds a dataset")
    counts = write_demo(out, args.size, args.val_fraction, args.seed)
    print(
        f"Wrote {counts['train']} train and {counts['val']} val images ({args.size}x{args.size}, 10 classes) to {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.vision.make_demo_data``; returns the exit code."""
    p = UsageParser(prog="python -m usrl.vision.make_demo_data", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out", help="folder to write (train/ and val/ ImageFolder trees)")
    p.add_argument("--size", type=int, default=36, help="image side in pixels (default 36; train at 32)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    return cli_main("usrl.vision.make_demo_data", lambda: _run(p.parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
