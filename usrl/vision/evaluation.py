"""Accuracy at a width: BatchNorm calibration on training images, then top-1/top-5 on a split;
and the accuracy-vs-width (and vs MACs) spectrum files."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from usrl import plots
from usrl.distributed import Distributed
from usrl.nn import calibrate_bn, profile, width
from usrl.utils import atomic_write_csv, atomic_write_text
from usrl.vision.models import USMobileNet

SPECTRUM_COLUMNS = ["width", "top1", "top5", "macs", "params", "n_images"]


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many of ``labels`` are among the ``k`` highest ``logits``, for each ``k`` (capped at the
    number of classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return [int(hit[:, :k].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def accuracy(
    model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], device: torch.device, amp: bool = False,
    dist: Distributed | None = None,
) -> tuple[float, float, int]:  # fmt: skip
    """Top-1 and top-5 accuracy (%) of ``model`` (eval mode, current width) over ``loader``, and
    the number of images. Under ``dist``, each process passes its own shard and counts are summed."""
    was_training = model.training
    model.eval()
    counts = [0.0, 0.0, 0.0]
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(images)
            c1, c5 = topk_correct(logits.float(), labels)
            counts[0] += c1
            counts[1] += c5
            counts[2] += len(labels)
    finally:
        model.train(was_training)
    if dist is not None:
        counts = dist.all_sum(counts)
    n = int(counts[2])
    if n == 0:
        raise ValueError("no images to evaluate")
    return 100.0 * counts[0] / n, 100.0 * counts[1] / n, n


def evaluate_widths(
    model: USMobileNet,
    widths: list[float],
    calib_loader: Iterable[tuple[Tensor, Tensor]],
    calib_batches: int,
    val_loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    amp: bool = False,
    dist: Distributed | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """For each width: calibrate BatchNorm on ``calib_batches`` batches of ``calib_loader``, then
    top-1/top-5 on ``val_loader``; with the MACs and parameters at ``model.config["resolution"]``.
    The calibrated statistics stay in the model (and in its ``state_dict``)."""
    res = model.config["resolution"]
    rows = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(widths), desc="widths", unit="width", leave=False, file=sys.stderr)
    for w in widths:
        calibrate_bn(model, calib_loader, w, num_batches=calib_batches)
        with width(model, w):
            top1, top5, n = accuracy(model, val_loader, device, amp, dist)
        rows.append({"width": w, "top1": round(top1, 4), "top5": round(top5, 4), **profile(model, (3, res, res), w),
                     "n_images": n})  # fmt: skip
        if bar is not None:
            bar.update(1)
            bar.set_postfix(width=f"{w:.3f}", top1=f"{top1:.2f}")
    if bar is not None:
        bar.close()
    return rows


def plot_spectrum(curves: dict[str, list[dict[str, Any]]], title: str, path: Path) -> None:
    """Top-1 accuracy against width and against MMACs, one line per entry of ``curves``."""
    lines = [plots.Curve(label, [r["width"] for r in rows], [r["top1"] for r in rows], [r["macs"] for r in rows])
             for label, rows in curves.items()]  # fmt: skip
    plots.plot_spectrum(lines, "top-1 accuracy (%)", title, path, "MMACs per image")


def write_spectrum(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any], label: str) -> None:
    """``spectrum.csv``, ``spectrum.json`` (``meta`` + rows) and ``spectrum.png`` under ``out``."""
    atomic_write_csv(out / "spectrum.csv", rows, SPECTRUM_COLUMNS)
    atomic_write_text(out / "spectrum.json", json.dumps({**meta, "rows": rows}, indent=1))
    res = meta["config"]["resolution"]
    plot_spectrum({label: rows}, f"{meta['config']['arch']} at {res}x{res}", out / "spectrum.png")


def format_table(rows: list[dict[str, Any]]) -> str:
    """The spectrum as a text table."""
    lines = [f"{'width':>6} {'MMACs':>9} {'Mparams':>8} {'top-1':>7} {'top-5':>7}"]
    lines += [f"{r['width']:>6.3f} {r['macs'] / 1e6:>9.2f} {r['params'] / 1e6:>8.3f} {r['top1']:>7.2f} {r['top5']:>7.2f}"
              for r in rows]  # fmt: skip
    return "\n".join(lines)


class Shard(torch.utils.data.Sampler[int]):
    """Every ``world``-th index of a dataset from ``rank`` on, in order, without padding: the
    processes together see each image exactly once (unlike ``DistributedSampler``)."""

    def __init__(self, dataset: Sized, rank: int, world: int) -> None:
        self.indices = list(range(rank, len(dataset), world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
