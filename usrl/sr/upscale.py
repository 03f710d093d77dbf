"""Upscale one image with a trained US-WDSR at a chosen width.

python -m usrl.sr.upscale logs/sr/wdsr_a_x2_1 --width 0.5 in.png out.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

from usrl.nn import width
from usrl.sr.checkpoint import load_model_for_cli
from usrl.sr.data import SRDataError, load_rgb, to_tensor, to_uint8
from usrl.utils import UsageError, UsageParser, atomic_write, cli_main, resolve_device


def upscale(model: torch.nn.Module, image: torch.Tensor, w: float) -> torch.Tensor:
    """The model's output for one image ``(3, h, w)`` in [0, 1] at width ``w``, clamped to [0, 1]."""
    device = next(model.parameters()).device
    with torch.no_grad(), width(model, w):
        return model(image[None].to(device))[0].clamp(0, 1).cpu()


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="python -m usrl.sr.upscale", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("checkpoint", help="a run folder or a .pt file")
    p.add_argument("input", help="image to upscale")
    p.add_argument("output", help="where to write the PNG")
    p.add_argument("--width", type=float, default=None, help="network width (default: the largest)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def _run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, _ = load_model_for_cli(args.checkpoint, device, [] if args.width is None else [args.width])
    w = model.config["width_range"][1] if args.width is None else args.width
    if not Path(args.input).is_file():
        raise UsageError(f"no such image: {args.input}")
    try:
        image = to_tensor(load_rgb(Path(args.input)))
    except SRDataError as exc:
        raise UsageError(str(exc)) from None
    out = upscale(model, image, w)
    atomic_write(args.output, lambda tmp: Image.fromarray(to_uint8(out)).save(tmp, format="PNG"), suffix=".png")
    print(f"Wrote {args.output} ({out.shape[2]}x{out.shape[1]}, width {w:g})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.sr.upscale``; returns the exit code."""
    return cli_main("usrl.sr.upscale", lambda: _run(build_parser().parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
