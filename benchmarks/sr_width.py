"""One US-WDSR against individually trained WDSRs at each width, and US without distillation.

On the scikit-image demo data (python -m usrl.sr.make_demo_data; train: 6 images, valid:
chelsea and rocket), x2, trains over several seeds:
  * us              US-WDSR-A: sandwich rule (n=4) + inplace distillation (MSE to the full width)
  * us_no_distill   US-WDSR-A, every width on the HR images
  * individual_<w>  a WDSR-A of width w alone (the width-w sub-network, n_widths=1)
with the same steps, batch and patches each, evaluates every model on the valid images (RGB
PSNR, border of 2 shaved, 8-bit rounding; see usrl.sr.metrics), and writes
benchmarks/results/sr_<task>.md, sr_<task>.png and sr_<task>_crops.png (bicubic / widths / HR of
one crop, from the us model of the first seed). Finished cells are kept under
benchmarks/results/cells/sr_<task>/ and skipped on rerun; a cell interrupted (killed, or failed)
resumes from its trainer's last checkpoint (every tenth of its steps) when it runs again.

    python benchmarks/sr_width.py --task demo --seeds 0 1 2 --jobs 2

--backend ray runs the cells on a Ray cluster (benchmarks/README.md, "Cells on a Ray cluster").
"""

from __future__ import annotations

import argparse
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
WIDTHS = [0.25, 0.5, 0.75, 1.0]
GRID = [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
# CPU-scale: a reduced WDSR-A (16 features, 4 blocks) so that a cell trains in about a minute here
TASKS: dict[str, dict[str, Any]] = {
    "demo": {
        "scale": 2, "steps": 600, "train": ["--n-feats", "16", "--n-resblocks", "4", "--patch-size", "24",
                                            "--batch-size", "8", "--lr", "1e-3"],
    },
    "tiny": {"scale": 2, "steps": 20, "train": ["--n-feats", "8", "--n-resblocks", "1", "--patch-size", "16",
                                                "--batch-size", "4", "--lr", "1e-3"]},
}  # fmt: skip
METHODS = ["us", "us_no_distill", *(f"individual_{w}" for w in WIDTHS)]
CHECKPOINTS = 10  # a cell's trainer checkpoints every tenth of its steps (a cell started again resumes there)
CROPS_KEY = "_crops_model"  # a cell result's key for the crops model's weights (saved beside, not in, the JSON)


def method_args(method: str) -> tuple[list[str], list[float]]:
    """Extra training flags of a method, and the widths its model is evaluated at."""
    if method.startswith("individual_"):
        w = method.split("_")[1]
        return ["--width-range", w, w, "--n-widths", "1"], [float(w)]
    return (["--distill", "none"] if method == "us_no_distill" else []), GRID


def run_cell(
    task: str, method: str, seed: int, data: str, out_dir: str, crops_seed: int, device: str = "cpu"
) -> dict[str, Any]:
    """Train and evaluate one (method, seed) cell on ``device``; returns its JSON (the caller writes it
    under ``out_dir``), with the weights of the crops figure's model under ``CROPS_KEY``."""
    import io

    import torch

    from usrl.sr.checkpoint import load_model
    from usrl.sr.data import ImageDataset, find_pairs
    from usrl.sr.evaluate import evaluate
    from usrl.sr.models import LR_SIZE
    from usrl.sr.train import main as train

    cfg = TASKS[task]
    extra, widths = method_args(method)
    save_every = max(1, cfg["steps"] // CHECKPOINTS)
    args = ["--data", data, "--scale", str(cfg["scale"]), "--steps", str(cfg["steps"]), "--seed", str(seed),
            "--eval-freq", "0", "--save-freq", str(save_every), "--workers", "0", "--cache", "--verbose", "0",
            *cfg["train"], *extra]  # fmt: skip
    run, train_time, attempts = train_trainer_cell(train, f"[sr {task}]", out_dir, method, seed, args, device,
                                                   "--steps")  # fmt: skip
    model, _ = load_model(run / "model.pt")
    rows = evaluate(model, ImageDataset(find_pairs(data, "valid", cfg["scale"]), cfg["scale"]), widths,
                    LR_SIZE, device, method)  # fmt: skip
    result: dict[str, Any] = {"task": task, "method": method, "seed": seed, "steps": cfg["steps"],
                              "train_time_s": train_time, "attempts": attempts, "rows": rows}  # fmt: skip
    if method == "us" and seed == crops_seed:  # kept for the crops figure (not committed)
        buffer = io.BytesIO()
        torch.save({"config": model.config, "model": {k: v.cpu() for k, v in model.state_dict().items()}}, buffer)
        result[CROPS_KEY] = buffer.getvalue()
    print(f"[sr {task}] {method} seed {seed}: {train_time:.0f}s, PSNR "
          + ", ".join(f"{r['width']}:{r['psnr_rgb']:.2f}" for r in rows), flush=True)  # fmt: skip
    return result


def save(call: tuple[Any, ...], result: dict[str, Any]) -> None:
    """Write a finished cell under its cell folder: the JSON, and the crops figure's model if it has it."""
    cell_dir, method, seed = Path(call[4]), call[1], call[2]
    crops = result.pop(CROPS_KEY, None)
    if crops is not None:
        from usrl.utils import atomic_write

        atomic_write(cell_dir / "us_crops_model.pt", lambda tmp: tmp.write_bytes(crops))
    save_finished_cell(cell_dir, method, seed, result)


def at(rows: list[dict[str, Any]], w: float, key: str = "psnr_rgb") -> float | None:
    """The value of ``key`` at width ``w`` in an evaluation."""
    return value_at(rows, w, key)


def crops_image(data: str, cell_dir: Path, out: Path, scale: int) -> None:
    """bicubic / US at each width / HR of one crop of the first valid image, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from usrl.sr.data import ImageDataset, find_pairs, to_uint8
    from usrl.sr.evaluate import bicubic_upscale
    from usrl.sr.models import build_model
    from usrl.sr.upscale import upscale

    saved = torch.load(cell_dir / "us_crops_model.pt", weights_only=False)
    model = build_model(saved["config"])
    model.load_state_dict(saved["model"])
    model.eval()
    name, lr, hr = ImageDataset(find_pairs(data, "valid", scale), scale)[0]
    h, w = hr.shape[-2:]
    y, x, size = h // 3, w // 3, min(h, w) // 3
    panels = [("bicubic", bicubic_upscale(lr, scale))] + [(f"US w={v}", upscale(model, lr, v)) for v in WIDTHS]
    panels.append(("HR", hr))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(to_uint8(img)[y : y + size, x : x + size], interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{name}, x{scale}: one crop", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report(task: str, cells: list[dict[str, Any]], command: str, seeds: list[int], out: Path) -> str:
    """Write sr_<task>.md and sr_<task>.png from the cells; returns the markdown."""
    from usrl.plots import plot_spectrum
    from usrl.utils import atomic_write_text

    by: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by.setdefault(c["method"], []).append(c)
    bicubic = cells[0]["rows"][0]["psnr_rgb"]
    fmt = lambda xs: mean_std(xs, 2)  # noqa: E731
    cfg = TASKS[task]
    lines = [
        f"# PSNR vs width: US-WDSR-A on the {task} data (x{cfg['scale']})",
        "",
        f"Command: `{command}`  ",
        f"Seeds: {', '.join(map(str, seeds))}; {cfg['steps']} steps per model, flags `{' '.join(cfg['train'])}` "
        "(a reduced WDSR-A: CPU-scale); valid images chelsea and rocket. PSNR on RGB, border of 2 shaved, 8-bit "
        "rounding. Numbers: mean over seeds ± std over seeds.",
        "",
        f"Bicubic: {bicubic:.2f} dB.",
        "",
        "| method | " + " | ".join(f"w={w}" for w in WIDTHS) + " | train time (s) |",
        "|---|" + "---:|" * (len(WIDTHS) + 1),
    ]
    for m in ("us", "us_no_distill"):
        cs = by.get(m, [])
        lines.append(f"| {m} | " + " | ".join(fmt([v for c in cs if (v := at(c["rows"], w)) is not None])
                                               for w in WIDTHS) + f" | {fmt([c['train_time_s'] for c in cs])} |")  # fmt: skip
    ind = {w: [at(c["rows"], w) for c in by.get(f"individual_{w}", [])] for w in WIDTHS}
    ind_t = [c["train_time_s"] for m, cs in by.items() if m.startswith("individual_") for c in cs]
    lines.append("| individual (one net per width) | " + " | ".join(fmt(ind[w]) for w in WIDTHS)
                 + f" | {fmt(ind_t)} per net |")  # fmt: skip
    lines += ["", "US minus individual at each width (dB, mean over seeds):", ""]
    for w in WIDTHS:
        u = [v for c in by.get("us", []) if (v := at(c["rows"], w)) is not None]
        if u and ind[w]:
            lines.append(f"- w={w}: {np.mean(u) - np.mean(ind[w]):+.2f}")
    intervals = spectrum_intervals(by, lambda c, w: at(c["rows"], w), GRID, WIDTHS)
    lines += ["", *interval_lines(intervals, WIDTHS, "PSNR (dB, RGB)")]
    text = "\n".join(lines) + "\n"

    curves = [as_curve(m, intervals["curves"][m]) for m in ("us", "us_no_distill") if intervals["curves"].get(m)]
    if intervals["curves"].get("individual"):
        curves.append(as_curve("individual nets", intervals["curves"]["individual"], points=True))
    plot_spectrum(curves, f"PSNR (dB, RGB), {intervals['statistic']} over seeds (95% CI)",
                  f"US-WDSR-A x{cfg['scale']} vs individually trained ({len(seeds)} seeds)", out / f"sr_{task}.png",
                  reference=("bicubic", bicubic))  # fmt: skip
    atomic_write_text(out / f"sr_{task}.md", keep_notes(out / f"sr_{task}.md", text))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="demo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--data", help="demo data folder (default: written to benchmarks/.data/sr_demo)")
    p.add_argument("--out", type=Path, default=RESULTS)
    add_backend_arguments(p)
    args = p.parse_args(argv)
    command = "python benchmarks/sr_width.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cell_dir = args.out / "cells" / f"sr_{args.task}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else Path(__file__).parent / ".data" / "sr_demo"
    if not (data / "DIV2K_train_HR").is_dir():
        from usrl.sr.make_demo_data import write_demo

        write_demo(data)
    backend = backend_from_args(p, args, [data])
    todo = pending(cell_dir, args.methods, args.seeds)
    print(f"{len(todo)} cells to train{resuming_note(partial_dir(cell_dir, m, s) for m, s in todo)}, "
          f"{len(args.methods) * len(args.seeds) - len(todo)} done already", flush=True)  # fmt: skip
    calls = [(args.task, m, s, str(data), str(cell_dir), min(args.seeds), cell_device(backend)) for m, s in todo]
    code = train_cells(run_cell, calls, args.jobs, describe=lambda c: f"{c[1]} seed {c[2]}", save=save,
                       backend=backend)  # fmt: skip
    if code:
        return code
    cells = load_cells(cell_dir, args.methods, args.seeds)
    print(report(args.task, cells, command, args.seeds, args.out))
    if (cell_dir / "us_crops_model.pt").exists():
        crops_image(str(data), cell_dir, args.out / f"sr_{args.task}_crops.png", TASKS[args.task]["scale"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
