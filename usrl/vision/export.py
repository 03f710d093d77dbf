"""Export one width of a trained US-MobileNet as a network of standard torch layers
(``python -m usrl.export RUN --width W --out FILE`` does the same for every kind of run).

    python -m usrl.vision.export logs/vision/us_mobilenet_v2_1 --width 0.5 --out mnv2_w0.5.pt2
    python -m usrl.vision.export logs/vision/us_mobilenet_v2_1 --width 0.5 --out mnv2_w0.5.onnx

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
from usrl.nn.export import EXPORT_FORMATS as FORMATS
from usrl.nn.export import save_exported
from usrl.utils import UsageError, UsageParser, cli_main, resolve_device
from usrl.vision.checkpoint import data_root, eval_loaders, load_model_for_cli


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


def export_width(
    checkpoint: str,
    width: float,
    out: Path,
    data: str | None = None,
    calib_batches: int = 8,
    batch_size: int = 256,
    workers: int = 4,
    device: str = "auto",
) -> str:
    """Write ``checkpoint``'s classifier at ``width`` to ``out`` (calibrating BN first when the
    checkpoint has no statistics for that width); returns a one-line description."""
    if out.suffix not in FORMATS:
        raise UsageError(f"--out: unknown format {out.suffix or '(none)'}; use one of {', '.join(FORMATS)}")
    model, ckpt = load_model_for_cli(checkpoint, resolve_device(device), [width])
    if not is_calibrated(model, width):
        root = data_root(data, ckpt, f"to calibrate width {width:g} (the checkpoint has no statistics for it)")
        calib, _ = eval_loaders(root, "val", ckpt["classes"], model.config["resolution"], batch_size, workers)
        calibrate_bn(model, calib, width, num_batches=calib_batches)
    static = export_fixed_width(model, width).cpu()
    res = model.config["resolution"]
    try:
        save_exported(static, torch.randn(2, 3, res, res), out, input_name="image", output_name="logits")
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    n_params = sum(p.numel() for p in static.parameters())
    return (f"{model.config['arch']} at width {width:g}, {n_params / 1e6:.3f}M parameters, "
            f"input (N, 3, {res}, {res})")  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    what = export_width(args.checkpoint, args.width, out, args.data, args.calib_batches, args.batch_size,
                        args.workers, args.device)  # fmt: skip
    print(f"Wrote {out}: {what}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.vision.export``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.vision.export", lambda: _run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
