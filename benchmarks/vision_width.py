"""One US-MobileNet v2 against individually trained MobileNets at each width, and US without
inplace distillation: the accuracy-vs-width spectrum on CPU-scale data.

On the digits demo data (python -m usrl.vision.make_demo_data: 1438 train / 359 val images of
scikit-learn's digits, 36x36 RGB, trained at 32x32), trains over several seeds:
  * us              US-MobileNet v2 (0.35-1.0): sandwich rule (n=4) + inplace distillation
  * us_no_distill   the same, every width on the labels
  * individual_<w>  MobileNet v2 of width w alone (the width-w sub-network, n_widths=1)
with the same epochs, batch, schedule and augmentation each; every model is BN-calibrated and
evaluated (top-1 on val) by the trainer itself. Writes benchmarks/results/vision_<task>.md and
vision_<task>.png. Finished cells are kept under benchmarks/results/cells/vision_<task>/ and
skipped on rerun; a cell interrupted (killed, or failed) resumes from its trainer's last
checkpoint (every epoch) when it runs again.

    python benchmarks/vision_width.py --task digits --seeds 0 1 2 --jobs 2

--backend ray runs the cells on a Ray cluster (benchmarks/README.md, "Cells on a Ray cluster").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cells import (  # noqa: E402
    add_backend_arguments,
    backend_from_args,
    cell_device,
    load_cells,
    mean_std,
    partial_dir,
    pending,
    resuming_note,
    save_finished_cell,
    train_cells,
    train_trainer_cell,
    value_at,
)
from intervals import as_curve, interval_lines, keep_notes, spectrum_intervals  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WIDTHS = [0.35, 0.5, 0.75, 1.0]
GRID = [round(0.35 + 0.05 * i, 2) for i in range(14)]  # 0.35 ... 1.0
COMMON = ["--arch", "us_mobilenet_v2", "--resolution", "32", "--no-flip", "--crop-scale", "0.5", "1",
          "--eval-freq", "0", "--verbose", "0"]  # fmt: skip
TASKS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 20, "train": ["--batch-size", "64", "--lr", "0.02", "--warmup-epochs", "2",
                                        "--workers", "1"]},
    "tiny": {"epochs": 1, "train": ["--batch-size", "4", "--calib-batches", "2", "--workers", "0"]},
}  # fmt: skip
METHODS = ["us", "us_no_distill", *(f"individual_{w}" for w in WIDTHS)]


def method_args(method: str) -> list[str]:
    """Extra training flags of a method (the widths it is evaluated at included)."""
    if method.startswith("individual_"):
        w = method.split("_")[1]
        return ["--width-range", w, w, "--n-widths", "1", "--final-widths", w]
    return (["--distill", "none"] if method == "us_no_distill" else []) + ["--final-widths", *map(str, GRID)]


def write_tiny_data(root: Path) -> None:
    """4 classes of 40x40 images (a bright square in one quadrant per class): seconds to train."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in range(4):
            (root / split / f"q{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(60, 25, (40, 40, 3))
                y, x = divmod(c, 2)
                img[4 + 18 * y : 18 + 18 * y, 4 + 18 * x : 18 + 18 * x] += 120
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / f"q{c}" / f"{i}.png")


def run_cell(task: str, method: str, seed: int, data: str, out_dir: str, device: str = "cpu") -> dict[str, Any]:
    """Train and evaluate one (method, seed) cell on ``device``; returns its JSON (the caller writes it
    under ``out_dir``). The trainer checkpoints every epoch under the cell's partial folder, so a
    cell started again after a kill (or a time limit) resumes there."""
    from usrl.vision.train import main as train

    cfg = TASKS[task]
    args = ["--data", data, "--epochs", str(cfg["epochs"]), "--seed", str(seed), *COMMON, *cfg["train"],
            *method_args(method)]  # fmt: skip
    run, train_time, attempts = train_trainer_cell(train, f"[vision {task}]", out_dir, method, seed, args, device,
                                                   "--epochs")  # fmt: skip
    rows = json.loads((run / "spectrum.json").read_text())["rows"]
    result = {"task": task, "method": method, "seed": seed, "epochs": cfg["epochs"], "train_time_s": train_time,
              "attempts": attempts, "rows": rows}  # fmt: skip
    print(f"[vision {task}] {method} seed {seed}: {train_time:.0f}s, top-1 "
          + ", ".join(f"{r['width']}:{r['top1']:.1f}" for r in rows if r["width"] in WIDTHS), flush=True)  # fmt: skip
    return result


def at(rows: list[dict[str, Any]], w: float, key: str = "top1") -> float | None:
    """The value of ``key`` at width ``w`` in a spectrum."""
    return value_at(rows, w, key)


def report(task: str, cells: list[dict[str, Any]], command: str, seeds: list[int], out: Path) -> str:
    """Write vision_<task>.md and vision_<task>.png from the cells; returns the markdown."""
    from usrl.plots import plot_spectrum
    from usrl.utils import atomic_write_text

    by: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by.setdefault(c["method"], []).append(c)
    fmt = lambda xs: mean_std(xs, 2)  # noqa: E731
    cfg = TASKS[task]
    macs = {w: at(cells[0]["rows"], w, "macs") or at(by.get(f"individual_{w}", cells)[0]["rows"], w, "macs")
            for w in WIDTHS}  # fmt: skip
    lines = [
        f"# Top-1 vs width: US-MobileNet v2 on the {task} data",
        "",
        f"Command: `{command}`  ",
        f"Seeds: {', '.join(map(str, seeds))}; {cfg['epochs']} epochs per model, flags "
        f"`{' '.join(COMMON + cfg['train'])}`. Every model is BN-calibrated at each width on training batches "
        "(`--calib-batches`, default 8) and evaluated on val (top-1, %). Numbers: mean over seeds ± std over seeds.",
        "",
        "| method | " + " | ".join(f"w={w} ({(macs[w] or 0) / 1e6:.2f} MMACs)" for w in WIDTHS)
        + " | mean over widths | train time (s) |",
        "|---|" + "---:|" * (len(WIDTHS) + 2),
    ]  # fmt: skip
    area: dict[str, list[float]] = {}
    for m in ("us", "us_no_distill"):
        cs = by.get(m, [])
        area[m] = [float(np.mean([at(c["rows"], w) for w in WIDTHS])) for c in cs]
        lines.append(f"| {m} | " + " | ".join(fmt([v for c in cs if (v := at(c["rows"], w)) is not None])
                                               for w in WIDTHS)
                     + f" | {fmt(area[m])} | {fmt([c['train_time_s'] for c in cs])} |")  # fmt: skip
    ind = {w: [at(c["rows"], w) for c in by.get(f"individual_{w}", [])] for w in WIDTHS}
    ind_t = [c["train_time_s"] for m, cs in by.items() if m.startswith("individual_") for c in cs]
    ind_area = [float(np.mean([ind[w][i] for w in WIDTHS])) for i in range(min(map(len, ind.values())))]
    lines.append("| individual (one net per width) | " + " | ".join(fmt(ind[w]) for w in WIDTHS)
                 + f" | {fmt(ind_area)} | {fmt(ind_t)} per net |")  # fmt: skip
    lines += ["", "US minus individual at each width (points of top-1, mean over seeds):", ""]
    for w in WIDTHS:
        u = [v for c in by.get("us", []) if (v := at(c["rows"], w)) is not None]
        if u and ind[w]:
            lines.append(f"- w={w}: {np.mean(u) - np.mean(ind[w]):+.2f}")
    intervals = spectrum_intervals(by, lambda c, w: at(c["rows"], w), GRID, WIDTHS)
    lines += ["", *interval_lines(intervals, WIDTHS, "top-1 (%)")]
    text = "\n".join(lines) + "\n"

    curves = [as_curve(m, intervals["curves"][m], {w: at(by[m][0]["rows"], w, "macs") for w in GRID})
              for m in ("us", "us_no_distill") if intervals["curves"].get(m)]  # fmt: skip
    if intervals["curves"].get("individual"):
        curves.append(as_curve("individual nets", intervals["curves"]["individual"], macs, points=True))
    plot_spectrum(curves, f"top-1 (%), {intervals['statistic']} over seeds (95% CI)",
                  f"US-MobileNet v2 vs individually trained, {task} ({len(seeds)} seeds)", out / f"vision_{task}.png",
                  "MMACs per image (32x32)")  # fmt: skip
    atomic_write_text(out / f"vision_{task}.md", keep_notes(out / f"vision_{task}.md", text))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="digits")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--data", help="data folder (default: written to benchmarks/.data/vision_<task>)")
    p.add_argument("--out", type=Path, default=RESULTS)
    add_backend_arguments(p)
    args = p.parse_args(argv)
    command = "python benchmarks/vision_width.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cell_dir = args.out / "cells" / f"vision_{args.task}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else Path(__file__).parent / ".data" / f"vision_{args.task}"
    if not (data / "train").is_dir():
        if args.task == "tiny":
            write_tiny_data(data)
        else:
            from usrl.vision.make_demo_data import write_demo

            write_demo(data)
    backend = backend_from_args(p, args, [data])
    todo = pending(cell_dir, args.methods, args.seeds)
    print(f"{len(todo)} cells to train{resuming_note(partial_dir(cell_dir, m, s) for m, s in todo)}, "
          f"{len(args.methods) * len(args.seeds) - len(todo)} done already", flush=True)  # fmt: skip
    calls = [(args.task, m, s, str(data), str(cell_dir), cell_device(backend)) for m, s in todo]
    code = train_cells(run_cell, calls, args.jobs, describe=lambda c: f"{c[1]} seed {c[2]}",
                       save=lambda c, result: save_finished_cell(c[4], c[1], c[2], result),
                       backend=backend)  # fmt: skip
    if code:
        return code
    cells = load_cells(cell_dir, args.methods, args.seeds)
    print(report(args.task, cells, command, args.seeds, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
