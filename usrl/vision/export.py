"""Export one width of a trained US-MobileNet as a network of standard torch layers.

    python -m usrl.vision.export runs/vision/us_mobilenet_v2_1 --width 0.5 --out mnv2_w0.5.pt2
    python -m usrl.vision.export runs/vision/us_mobilenet_v2_1 --width 0.5 --out mnv2_w0.5.onnx

The width's BatchNorm statistics come from the checkpoint when it holds them (model.pt keeps
those of the final spectrum widths); otherwise they are calibrated first on --calib-batches
training batches of --data. ``.pt2``: ``torch.export`` program, loaded without usrl by
``torch.export.load(path).module()``; ``.onnx``: ONNX (needs the ``onnx`` package); ``.pt``: the
exported ``nn.Module`` pickled whole (``torch.load(path, weights_only=False)``). The batch
dimension is dynamic in all formats; inputs are normalised RGB at the model's resolution.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from usrl.nn import calibrate_bn, export_fixed_width, is_calibrated
from usrl.utils import UsageError, UsageParser, atomic_write, cli_main, resolve_device
from usrl.vision.checkpoint import data_root, eval_loaders, load_model_for_cli

FORMATS = (".pt2", ".onnx", ".pt")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.vision.export``."""
    p = UsageParser(
        prog="python -m usrl.vision.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="a run folder (its model.pt, else checkpoint.pt) or a .pt file")
    p.add_argument("--width", type=float, required=True)
    p.add_argument("--out", required=True, help=f"output file: {', '.join(FORMATS)}")
    p.add_argument("--data", help="data folder for BN calibration (default: the one the model was trained on)")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def _write(module: torch.nn.Module, example: torch.Tensor, out: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    if out.suffix == ".pt2":
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        atomic_write(out, lambda tmp: torch.export.save(program, tmp), suffix=".pt2")
    elif out.suffix == ".onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UsageError("--out .onnx needs the onnx package (pip install onnx onnxscript)") from None

        def write_onnx(tmp: Path) -> None:
            torch.onnx.export(module, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), dynamo=True, verbose=False)  # fmt: skip

        atomic_write(out, write_onnx, suffix=".onnx")
    else:
        atomic_write(out, lambda tmp: torch.save(module, tmp), suffix=".pt")


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in FORMATS:
        raise UsageError(f"--out: unknown format {out.suffix or '(none)'}; use one of {', '.join(FORMATS)}")
    device = resolve_device(args.device)
    model, data = load_model_for_cli(args.checkpoint, device, [args.width])
    if not is_calibrated(model, args.width):
        root = data_root(
            args.data, data, f"to calibrate width {args.width:g} (the checkpoint has no statistics for it)"
        )
        calib, _ = eval_loaders(root, "val", data["classes"], model.config["resolution"], args.batch_size, args.workers)
        calibrate_bn(model, calib, args.width, num_batches=args.calib_batches)
    static = export_fixed_width(model, args.width).cpu()
    res = model.config["resolution"]
    _write(static, torch.randn(2, 3, res, res), out)
    n_params = sum(p.numel() for p in static.parameters())
    print(f"Wrote {out}: {model.config['arch']} at width {args.width:g}, {n_params / 1e6:.3f}M parameters, "
          f"input (N, 3, {res}, {res})")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.vision.export``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.vision.export", lambda: _run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
