"""Upscale one image with a trained US-WDSR at a chosen width.

python -m usrl.sr.upscale runs/sr/wdsr_a_x2_1 --width 0.5 in.png out.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

from usrl.nn import width
from usrl.sr.checkpoint import SRCheckpointError, load_model
from usrl.sr.data import SRDataError, load_rgb, to_tensor, to_uint8
from usrl.utils import UsageError, UsageParser, atomic_write, resolve_device


def upscale(model: torch.nn.Module, image: torch.Tensor, w: float) -> torch.Tensor:
    """The model's output for one image ``(3, h, w)`` in [0, 1] at width ``w``, clamped to [0, 1]."""
    device = next(model.parameters()).device
    with torch.no_grad(), width(model, w):
        return model(image[None].to(device))[0].clamp(0, 1).cpu()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.sr.upscale``; returns the exit code."""
    p = UsageParser(prog="python -m usrl.sr.upscale", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("checkpoint", help="a run folder or a .pt file")
    p.add_argument("input", help="image to upscale")
    p.add_argument("output", help="where to write the PNG")
    p.add_argument("--width", type=float, default=None, help="network width (default: the largest)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else argv)
        device = resolve_device(args.device)
        try:
            model, _ = load_model(args.checkpoint, device)
        except SRCheckpointError as exc:
            raise UsageError(str(exc)) from None
        low, high = model.config["width_range"]
        w = high if args.width is None else args.width
        if not low <= w <= high:
            raise UsageError(f"--width {w:g} is outside the model's width range [{low:g}, {high:g}]")
        if not Path(args.input).is_file():
            raise UsageError(f"no such image: {args.input}")
        try:
            image = to_tensor(load_rgb(Path(args.input)))
        except SRDataError as exc:
            raise UsageError(str(exc)) from None
        out = upscale(model, image, w)
    except UsageError as exc:
        print(f"usrl.sr.upscale: error: {exc}", file=sys.stderr)
        return 2
    atomic_write(args.output, lambda tmp: Image.fromarray(to_uint8(out)).save(tmp, format="PNG"), suffix=".png")
    print(f"Wrote {args.output} ({out.shape[2]}x{out.shape[1]}, width {w:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
