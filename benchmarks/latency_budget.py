"""Deadlines under a changing CPU load: the width controller against fixed widths.

Three deployment workloads where a latency budget binds on this CPU:

- ``classifier``: US-MobileNet v2 (the digits benchmark's architecture) on one 224x224 image;
- ``sr``: the SR demo's US-WDSR-A (16 features, 4 blocks, x2) on one 320x180 frame;
- ``pong``: the committed Pong US-DQN's acting network on 64 observations (one per env).

For each, the latency profile is measured with the machine quiet, the budget is set to
``--budget-factor`` x the full width's median (so the full width fits while the machine is free),
and a frame loop runs one call per budget period (a call that finishes early waits for its next
frame; a call over the budget is a deadline miss). A background process multiplies matrices on
``--load-threads`` cores (default: half of them) during alternate ``--period``-second phases. Three policies run the same schedule:
the full width, the narrowest width, and ``WidthController(online=True)`` through
``BudgetedModule``. Per policy and load phase: deadline-miss rate, mean width, latency p50/p99,
and the expected quality of the widths that ran — each workload's quality per width is what its
trained model measured in our committed benchmarks (digits top-1 from ``cells/vision_digits``,
PSNR from ``cells/sr_demo``, Pong return from ``pong/sweep.json``); latency does not depend on
the weights, so the classifier and SR nets are timed with fresh weights of the same shapes.

Run it on an otherwise quiet machine:

    python benchmarks/latency_budget.py            # writes benchmarks/results/latency_budget.{md,json,png}
    python benchmarks/latency_budget.py --load-threads 2 --out benchmarks/results/latency_budget_load2.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = ("full width", "narrowest", "controller")


@dataclass
class Workload:
    """A network at its deployment input, and its trained model's quality per width."""

    name: str
    what: str
    net: nn.Module
    example: torch.Tensor
    widths: list[float]
    quality: dict[float, float]
    quality_name: str


def _mean_rows(files: list[Path], key: str) -> dict[float, float]:
    per_w: dict[float, list[float]] = {}
    for f in files:
        for row in json.loads(f.read_text())["rows"]:
            if row.get("width") is not None and row.get("method", "us") == "us":
                per_w.setdefault(round(float(row["width"]), 4), []).append(float(row[key]))
    if not per_w:
        raise FileNotFoundError(f"no per-width {key} in {[str(f) for f in files]}")
    return {w: float(np.mean(v)) for w, v in sorted(per_w.items())}


def classifier(results: Path) -> Workload:
    """US-MobileNet v2 (10 classes, as trained on digits) on one 224x224 image, BN calibrated."""
    from usrl.nn import calibrate_bn
    from usrl.vision.models import us_mobilenet_v2

    quality = _mean_rows(sorted((results / "cells" / "vision_digits").glob("us_s*.json")), "top1")
    torch.manual_seed(0)
    net = us_mobilenet_v2(num_classes=10, resolution=224)
    calib = [torch.randn(4, 3, 224, 224)]
    for w in quality:
        calibrate_bn(net, calib, w)
    return Workload("classifier", "US-MobileNet v2, 1 image 224x224", net.eval(), torch.randn(1, 3, 224, 224),
                    list(quality), quality, "digits top-1 %")  # fmt: skip


def super_resolution(results: Path) -> Workload:
    """The SR demo's US-WDSR-A (x2) on one 320x180 frame."""
    from usrl.sr.models import WDSR

    quality = _mean_rows(sorted((results / "cells" / "sr_demo").glob("us_s*.json")), "psnr_rgb")
    torch.manual_seed(0)
    net = WDSR("wdsr_a", scale=2, n_feats=16, n_resblocks=4)
    return Workload("sr", "US-WDSR-A x2 (16 features, 4 blocks), 1 frame 320x180", net.eval(),
                    torch.rand(1, 3, 180, 320), list(quality), quality, "demo PSNR dB")  # fmt: skip


def pong(results: Path) -> Workload:
    """The committed Pong US-DQN's acting network on 64 observations."""
    import warnings

    from usrl import USDQN

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # acting-only zip: says it rebuilds the target network
        model = USDQN.load(results / "pong" / "pong_us_dqn.zip", device="cpu", buffer_size=1)
    sweep = json.loads((results / "pong" / "sweep.json").read_text())
    quality = {round(float(r["width"]), 4): float(r["mean_return"]) for r in sweep["rows"]}
    obs = torch.as_tensor(np.stack([model.observation_space.sample() for _ in range(64)])).float()
    return Workload("pong", "Pong US-DQN acting network, 64 observations 4x84x84", model.policy.acting_network(),
                    obs, list(quality), quality, "Pong return")  # fmt: skip


WORKLOADS: dict[str, Callable[[Path], Workload]] = {"classifier": classifier, "sr": super_resolution, "pong": pong}


def _burn(on: Any, stop: Any, threads: int) -> None:
    """Background load: matrix products on ``threads`` threads while ``on`` is set."""
    torch.set_num_threads(threads)
    a = torch.randn(384, 384)
    while not stop.is_set():
        if on.is_set():
            a = torch.tanh(a @ a)
        else:
            time.sleep(0.002)


def frame_loop(
    work: Workload, policy: str, budget_ms: float, profile: Any, duration: float, period: float, load_on: Any
) -> list[tuple[float, float, float, bool]]:
    """Run one policy for ``duration`` s, one call per ``budget_ms`` frame, the load switching
    every ``period`` s (off first). Returns (time s, width, latency ms, load on) per call."""
    from usrl.deploy import BudgetedModule, WidthController
    from usrl.nn import width_control

    control = width_control(work.net)
    fixed = {"full width": max(work.widths), "narrowest": min(work.widths)}.get(policy)
    budgeted = None
    if fixed is None:
        budgeted = BudgetedModule(work.net, WidthController(profile, budget_ms, online=True, fallback="narrowest"))
    trace = []
    start = time.perf_counter()
    next_frame = start
    with torch.inference_mode():
        while (now := time.perf_counter()) - start < duration:
            loaded = int((now - start) // period) % 2 == 1
            if loaded:
                load_on.set()
            else:
                load_on.clear()
            if budgeted is None:
                control.width = fixed
                t0 = time.perf_counter()
                work.net(work.example)
                ms, width = (time.perf_counter() - t0) * 1e3, fixed
            else:
                budgeted(work.example)
                ms, width = budgeted.last_ms, budgeted.last_width
            trace.append((now - start, width, ms, loaded))
            next_frame += budget_ms / 1e3
            pause = next_frame - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            else:  # a missed frame: the next one starts now, no backlog
                next_frame = time.perf_counter()
    load_on.clear()
    return trace


def summarize(
    trace: list[tuple[float, float, float, bool]], budget_ms: float, quality: dict[float, float]
) -> dict[str, Any]:
    """Per load phase (and overall): calls, miss rate, mean width, expected quality, p50/p99."""
    ws, qs = sorted(quality), [quality[w] for w in sorted(quality)]
    out = {}
    for phase, keep in (("quiet", lambda t: not t[3]), ("loaded", lambda t: t[3]), ("all", lambda t: True)):
        rows = [t for t in trace if keep(t)]
        if not rows:
            continue
        lat = np.array([t[2] for t in rows])
        widths = np.array([t[1] for t in rows])
        out[phase] = {
            "calls": len(rows),
            "miss_rate": float(np.mean(lat > budget_ms)),
            "mean_width": float(widths.mean()),
            "quality": float(np.mean(np.interp(widths, ws, qs))),
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Profile, then run every policy of every workload; returns everything measured."""
    from usrl.deploy import measure_latency

    ctx = mp.get_context("spawn")
    on, stop = ctx.Event(), ctx.Event()
    burner = ctx.Process(target=_burn, args=(on, stop, args.load_threads), daemon=True)
    burner.start()
    results: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        for name in args.workloads:
            work = WORKLOADS[name](args.results)
            print(f"[{name}] profiling {len(work.widths)} widths ({work.what})", flush=True)
            prof = measure_latency(work.net, work.example, work.widths, rounds=args.rounds, name=work.what)
            full_ms = prof.row(max(work.widths)).median_ms
            budget = args.budget_factor * full_ms
            entry: dict[str, Any] = {
                "what": work.what, "quality_name": work.quality_name, "quality": work.quality,
                "budget_ms": budget, "profile": prof.to_dict(), "policies": {},
            }  # fmt: skip
            for policy in POLICIES:
                trace = frame_loop(work, policy, budget, prof, args.duration, args.period, on)
                entry["policies"][policy] = {"summary": summarize(trace, budget, work.quality), "trace": trace}
                s = entry["policies"][policy]["summary"]["all"]
                print(f"[{name}] {policy}: {s['calls']} calls, misses {100 * s['miss_rate']:.1f}%, "
                      f"mean width {s['mean_width']:.3f}", flush=True)  # fmt: skip
            results[name] = entry
    finally:
        stop.set()
        burner.join(timeout=5)
        if burner.is_alive():
            burner.terminate()
    return results


def report(results: dict[str, Any], command: str) -> str:
    """Markdown tables: per workload, policy and load phase."""
    cfg = results["config"]
    first = next(results[n] for n in cfg["workloads"])
    dev = first["profile"]["device"]
    lines = [
        "# Deadlines under a changing CPU load: width controller vs fixed widths",
        "",
        f"Command: `{command}`  ",
        f"Machine: {dev['name']}, torch {dev.get('torch', torch.__version__)}, {dev['threads']} torch threads for the "
        f"model; background load: {cfg['load_threads']} threads of matrix products during alternate "
        f"{cfg['period']:g}-s phases (quiet first); {cfg['duration']:g} s per policy; budget = "
        f"{cfg['budget_factor']:g} x the full width's quiet median; one call per budget period. Quality is the "
        "expected quality of the widths that ran, from each trained model's committed per-width measurement.",
        "",
    ]
    for name in cfg["workloads"]:
        e = results[name]
        lines += [
            f"## {name}: {e['what']}",
            "",
            f"Budget {e['budget_ms']:.2f} ms; Pareto widths {', '.join(f'{w:g}' for w in e['profile']['pareto'])}; "
            f"profile noise {e['profile']['noise_ms']:.3f} ms.",
            "",
            f"| policy | load | calls | deadline misses | mean width | {e['quality_name']} | p50 ms | p99 ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for policy in POLICIES:
            for phase, s in e["policies"][policy]["summary"].items():
                lines.append(f"| {policy} | {phase} | {s['calls']} | {100 * s['miss_rate']:.1f}% | {s['mean_width']:.3f} | "
                             f"{s['quality']:.2f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Per workload: latency per call over time for each policy, the budget, the loaded phases
    shaded, and the controller's width on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = results["config"]["workloads"]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 3.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        e = results[name]
        period, duration = results["config"]["period"], results["config"]["duration"]
        for k in range(1, int(duration // period) + 1, 2):
            ax.axvspan(k * period, min((k + 1) * period, duration), color="0.9", lw=0)
        for policy, color in zip(POLICIES, ("tab:red", "tab:blue", "tab:green"), strict=True):
            tr = np.array(e["policies"][policy]["trace"], dtype=float)
            ax.plot(tr[:, 0], tr[:, 2], ".", ms=2, color=color, label=policy)
        ax.axhline(e["budget_ms"], color="k", ls="--", lw=1, label="budget")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{name}: {e['what']} (shaded: background load)", fontsize=9)
        tw = ax.twinx()
        tr = np.array(e["policies"]["controller"]["trace"], dtype=float)
        tw.plot(tr[:, 0], tr[:, 1], color="tab:green", lw=1, alpha=0.6)
        tw.set_ylabel("controller width")
        tw.set_ylim(0, 1.05)
        ax.legend(fontsize=7, loc="upper left", markerscale=4)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--duration", type=float, default=40.0, help="seconds per policy (default 40)")
    p.add_argument("--period", type=float, default=5.0, help="seconds per load phase (default 5)")
    p.add_argument("--budget-factor", type=float, default=1.3, help="budget / full width's quiet median (default 1.3)")
    p.add_argument("--load-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="background load threads (default: half the cores; all of them leave no width that fits)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=20, help="profiling rounds (default 20)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the committed quality results live")
    p.add_argument("--out", type=Path, default=RESULTS / "latency_budget.md", help="report path (.md)")
    args = p.parse_args(argv)
    if not (
        args.duration > 0 and args.period > 0 and args.budget_factor > 1 and args.load_threads >= 1 and args.rounds >= 2
    ):
        print("latency_budget: need --duration > 0, --period > 0, --budget-factor > 1, --load-threads >= 1, --rounds >= 2",
              file=sys.stderr)  # fmt: skip
        return 2
    results = run(args)
    command = "python benchmarks/latency_budget.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results))
    args.out.write_text(report(results, command.strip()))
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out}, {args.out.with_suffix('.json').name}, {args.out.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
