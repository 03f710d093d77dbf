"""PSNR/SSIM-vs-width spectrum of a trained US-WDSR, with the bicubic baseline.

    python -m usrl.sr.evaluate logs/sr/wdsr_a_x2_1 --widths 0.25:1.0:0.05 --data DIR

For each width: mean PSNR and SSIM over the split's images, on RGB and on Y (BT.601), with a
border of ``scale`` pixels shaved and the output rounded to 8 bits (see ``usrl.sr.metrics``),
and the MACs and parameters for an LR input of ``--lr-size`` (default 320x180, i.e. 640x360
output at x2). Bicubic upscaling of the same LR images is the baseline. Writes sr_eval.csv,
sr_eval.json and sr_eval.png (PSNR against width and against MMACs) to --out (default:
<run>/eval) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usrl.nn import profile, width
from usrl.sr.checkpoint import load_model_for_cli, resolve_checkpoint
from usrl.sr.data import ImageDataset, SRDataError, bicubic_resize, find_pairs, to_tensor, to_uint8
from usrl.sr.metrics import psnr, ssim
from usrl.sr.models import LR_SIZE, WDSR
from usrl.utils import (
    UsageError,
    UsageParser,
    atomic_write_csv,
    atomic_write_text,
    cli_main,
    parse_widths,
    resolve_device,
)

COLUMNS = ["method", "width", "macs", "params", "psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "n_images"]


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="python -m usrl.sr.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="a run folder (its model.pt, else checkpoint.pt) or a .pt file")
    p.add_argument("--data", required=True, help="data folder in DIV2K's layout")
    p.add_argument("--split", default="valid", help="split to evaluate (default valid)")
    p.add_argument("--widths", nargs="+", default=["0.25:1.0:0.05"], help="START:STOP:STEP or a list")
    p.add_argument("--lr-size", type=int, nargs=2, default=list(LR_SIZE), metavar=("W", "H"), help="LR size for MACs")
    p.add_argument("--out", help="output folder (default: <run>/eval)")
    p.add_argument("--label", help="name of this model in the outputs")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """PIL bicubic upscaling of an LR image tensor ``(3, h, w)`` by ``scale``."""
    h, w = lr.shape[-2:]
    return to_tensor(bicubic_resize(to_uint8(lr), (w * scale, h * scale)))


def _scores(outputs: list[torch.Tensor], targets: list[torch.Tensor], shave: int) -> dict[str, float]:
    return {
        "psnr_rgb": float(np.mean([psnr(o, t, shave) for o, t in zip(outputs, targets, strict=True)])),
        "ssim_rgb": float(np.mean([ssim(o, t, shave) for o, t in zip(outputs, targets, strict=True)])),
        "psnr_y": float(np.mean([psnr(o, t, shave, y_channel=True) for o, t in zip(outputs, targets, strict=True)])),
        "ssim_y": float(np.mean([ssim(o, t, shave, y_channel=True) for o, t in zip(outputs, targets, strict=True)])),
    }


@torch.no_grad()
def evaluate(
    model: WDSR, dataset: ImageDataset, widths: list[float], lr_size: tuple[int, int], device: torch.device | str,
    label: str = "us",
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per width (and one for bicubic): PSNR/SSIM on RGB and Y, MACs/params for ``lr_size``."""
    from tqdm import tqdm

    scale = model.scale
    images = [dataset[i] for i in range(len(dataset))]
    targets = [hr for _, _, hr in images]
    rows = [{"method": "bicubic", "width": None, "macs": 0, "params": 0, "n_images": len(images),
             **_scores([bicubic_upscale(lr, scale) for _, lr, _ in images], targets, scale)}]  # fmt: skip
    for w in tqdm(widths, desc="widths", unit="width", leave=False, file=sys.stderr):
        with width(model, w):
            outputs = [model(lr[None].to(device))[0].cpu() for _, lr, _ in images]
        cost = profile(model, (3, lr_size[1], lr_size[0]), w)
        rows.append({"method": label, "width": w, **cost, "n_images": len(images),
                     **_scores(outputs, targets, scale)})  # fmt: skip
    return rows


def plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """PSNR (RGB) against width and against MMACs, with the bicubic level as a line."""
    from usrl.plots import Curve, plot_spectrum

    model_rows = [r for r in rows if r["method"] != "bicubic"]
    bicubic = next(r["psnr_rgb"] for r in rows if r["method"] == "bicubic")
    curve = Curve(model_rows[0]["method"], [r["width"] for r in model_rows], [r["psnr_rgb"] for r in model_rows],
                  [r["macs"] for r in model_rows])  # fmt: skip
    plot_spectrum([curve], "PSNR (dB, RGB)", title, path, "MMACs per LR image", reference=("bicubic", bicubic))


def _run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    widths = parse_widths(args.widths)
    model, data = load_model_for_cli(args.checkpoint, device, widths)
    if min(args.lr_size) < 1:
        raise UsageError(f"--lr-size must be positive, got {args.lr_size}")
    try:
        dataset = ImageDataset(find_pairs(args.data, args.split, model.scale), model.scale)
    except SRDataError as exc:
        raise UsageError(str(exc)) from None
    ckpt = resolve_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else ckpt.parent / "eval"
    rows = evaluate(model, dataset, widths, tuple(args.lr_size), device, args.label or ckpt.parent.name)
    atomic_write_csv(out / "sr_eval.csv", rows, COLUMNS)
    meta = {
        "checkpoint": str(ckpt),
        "config": model.config,
        "split": args.split,
        "lr_size": args.lr_size,
        "step": data.get("step"),
        "conventions": "RGB and BT.601 Y, border of scale pixels shaved, 8-bit rounding",
    }
    atomic_write_text(out / "sr_eval.json", json.dumps({**meta, "rows": rows}, indent=1))  # fmt: skip
    plot(rows, f"US-{model.config['arch'].upper()} x{model.scale} on {args.split}", out / "sr_eval.png")
    print(f"{'method':>12} {'width':>6} {'MMACs':>9} {'PSNR':>7} {'SSIM':>7} {'PSNR-Y':>7} {'SSIM-Y':>7}")
    for r in rows:
        w = "-" if r["width"] is None else f"{r['width']:.3f}"
        print(f"{r['method'][:12]:>12} {w:>6} {r['macs'] / 1e6:>9.1f} {r['psnr_rgb']:>7.2f} "
              f"{r['ssim_rgb']:>7.4f} {r['psnr_y']:>7.2f} {r['ssim_y']:>7.4f}")  # fmt: skip
    print(f"Wrote {out / 'sr_eval.csv'}, sr_eval.json, sr_eval.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.sr.evaluate``; returns the exit code."""
    return cli_main("usrl.sr.evaluate", lambda: _run(build_parser().parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
