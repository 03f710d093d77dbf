"""Accuracy-vs-width spectrum of a trained US-MobileNet (the US-Nets FLOPs-accuracy curve).

    python -m usrl.vision.evaluate logs/vision/us_mobilenet_v2_1 --widths 0.35:1.0:0.025

For each width: BatchNorm calibration on --calib-batches shuffled training batches (evaluation
transform), then top-1/top-5 on the split, with the MACs and parameters at the model's
resolution. Writes spectrum.csv, spectrum.json and spectrum.png (top-1 against width and
against MMACs; --compare overlays other spectrum.json files) to --out (default: <run>/eval)
and prints a table. --save also stores the calibrated statistics in a copy of the model
(``model_calibrated.pt``), ready for ``python -m usrl.vision.export`` at those widths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from usrl.runtime import resolve_checkpoint, save_atomic
from usrl.utils import UsageError, UsageParser, cli_main, parse_widths, resolve_device
from usrl.vision.checkpoint import KIND, data_root, eval_loaders, load_model_for_cli
from usrl.vision.evaluation import evaluate_widths, format_table, plot_spectrum, write_spectrum


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.vision.evaluate``."""
    p = UsageParser(
        prog="python -m usrl.vision.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="a run folder (its model.pt, else checkpoint.pt) or a .pt file")
    p.add_argument("--data", help="folder with train/ and the split (default: the one the model was trained on)")
    p.add_argument("--split", default="val")
    p.add_argument("--widths", nargs="+", help="START:STOP:STEP or a list (default: the model's range, step 0.025)")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--out", help="output folder (default: <run>/eval)")
    p.add_argument("--label", help="name of this model in the plot")
    p.add_argument("--compare", nargs="+", default=[], metavar="JSON", help="other spectrum.json files to overlay")
    p.add_argument("--save", action="store_true", help="also write model_calibrated.pt with the calibrated statistics")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("-P", "--progress", action="store_true")
    return p


def _run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    for name in ("calib_batches", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    compare = {}
    for path in args.compare:
        try:
            other = json.loads(Path(path).read_text())
            compare[other.get("label", Path(path).parent.name)] = other["rows"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f"--compare: {path} is not a spectrum.json") from None
    given = parse_widths(args.widths) if args.widths else []
    model, data = load_model_for_cli(args.checkpoint, device, given)
    ckpt = resolve_checkpoint(args.checkpoint)
    low, high = model.config["width_range"]
    widths = given or parse_widths([f"{low}:{high}:0.025"])
    root = data_root(args.data, data, "for calibration and evaluation")
    res = model.config["resolution"]
    calib, loader = eval_loaders(root, args.split, data["classes"], res, args.batch_size, args.workers)
    rows = evaluate_widths(model, widths, calib, args.calib_batches, loader, torch.device(device),
                           progress=args.progress)  # fmt: skip
    out = Path(args.out) if args.out else ckpt.parent / "eval"
    label = args.label or ckpt.parent.name
    meta = {"checkpoint": str(ckpt), "label": label, "config": model.config, "data": str(root), "split": args.split,
            "epoch": data.get("epoch"), "calib_batches": args.calib_batches, "batch_size": args.batch_size}  # fmt: skip
    write_spectrum(out, rows, meta, label)
    if compare:
        plot_spectrum({label: rows, **compare}, f"{model.config['arch']} at {res}x{res}", out / "spectrum.png")
    if args.save:
        save_atomic(out / "model_calibrated.pt", {"kind": KIND, "config": model.config, "classes": data["classes"],
                                                  "model": model.state_dict(), "epoch": data.get("epoch"),
                                                  "data": str(root)})  # fmt: skip
    print(format_table(rows))
    print(f"Wrote {out / 'spectrum.csv'}, spectrum.json, spectrum.png" + (", model_calibrated.pt" if args.save else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.vision.evaluate``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.vision.evaluate", lambda: _run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
