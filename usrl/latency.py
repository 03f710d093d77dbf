"""Measure a trained model's latency per width on this device and find its Pareto widths.

    python -m usrl.latency logs/dqn/Pong_1 --widths 0.25:1.0:0.025 --batch 64
    python -m usrl.latency logs/vision/us_mobilenet_v2_1 --batch 1
    python -m usrl.latency logs/sr/wdsr_a_x2_1 --input-size 180x320
    python -m usrl.latency logs/ppo/CartPole-v1_1 --budget-ms 0.5      # also: the width for a budget

Times the deployment path: an RL run's acting network (observations to Q-values or action
parameters; no critic), a vision run's classifier (BN calibrated per width on random images:
timing does not depend on the statistics' values), an SR run's network on one LR frame.
Writes latency.json (the profile, with the device, threads, batch and input it was measured
on), latency.csv and latency.png to --out (default: <run>/latency/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usrl.utils import UsageError, UsageParser, cli_main, parse_widths, resolve_device


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.latency``."""
    p = UsageParser(prog="python -m usrl.latency", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model", help="RL run folder or model zip, vision run, SR run (or their .pt)")
    p.add_argument(
        "--widths", nargs="+", default=None, help="START:STOP:STEP or a list (default: the range, step 0.025)"
    )
    p.add_argument("--batch", type=int, default=1, help="inputs per call (RL: observations, e.g. one per env)")
    p.add_argument("--input-size", help="HxW of the input (SR: the LR frame, default 180x320; vision: its resolution)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=30, help="timed calls per width (interleaved)")
    p.add_argument("--which", choices=["final", "best"], default="final", help="RL run: which model")
    p.add_argument("--algo", default=None, help="RL: algorithm of a bare model zip (default dqn)")
    p.add_argument("--budget-ms", type=float, help="also print the widest Pareto width within this budget")
    p.add_argument("--out", help="output folder (default: <run>/latency)")
    p.add_argument("-P", "--progress", action="store_true")
    return p


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--input-size must look like 180x320, got {text!r}") from None
    if h < 1 or w < 1:
        raise UsageError(f"--input-size must be positive, got {text!r}")
    return h, w


def load_target(args: argparse.Namespace, device: str) -> tuple[nn.Module, torch.Tensor, str, Path]:
    """(the network to time, an example input batch, a name, the default out folder) for the
    model the command names."""
    from usrl.sweep import is_rl_model_path

    path = Path(args.model)
    if is_rl_model_path(path):
        return _rl_target(path, args, device)
    from usrl.runtime import CheckpointError, checkpoint_kind, resolve_checkpoint

    try:
        ckpt_path = resolve_checkpoint(path)
        kind = checkpoint_kind(ckpt_path)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    out = path if path.is_dir() else path.parent
    if kind == "usrl.vision":
        from usrl.nn import calibrate_bn, width_control
        from usrl.vision.checkpoint import load_model_for_cli

        model, data = load_model_for_cli(path, device, [])
        res = data["config"]["resolution"]
        if args.input_size:
            h, w = _size(args.input_size)
            if h != w:
                raise UsageError("--input-size: the classifier takes square images")
            res = h
        x = torch.randn(args.batch, 3, res, res, device=device)
        control = width_control(model)
        widths = _widths(args, control.low, control.high)
        calib = [torch.randn(max(2, args.batch), 3, res, res, device=device)]
        for calib_width in widths:
            calibrate_bn(model, calib, calib_width)
        return model, x, f"{data['config']['arch']} ({ckpt_path})", out / "latency"
    if kind == "usrl.sr":
        from usrl.sr.checkpoint import load_model_for_cli as load_sr

        sr_model, data = load_sr(path, device, [])
        h, w = _size(args.input_size or "180x320")
        x = torch.rand(args.batch, 3, h, w, device=device)
        return sr_model, x, f"{data['config']['arch']} x{data['config']['scale']} ({ckpt_path})", out / "latency"
    raise UsageError(f"{ckpt_path} is not a usrl vision or SR checkpoint")


def _rl_target(path: Path, args: argparse.Namespace, device: str) -> tuple[nn.Module, torch.Tensor, str, Path]:
    from usrl.sweep import load_rl_model, locate_model

    zip_path, algo, _ = locate_model(path, args.which, args.algo or "dqn")
    model = load_rl_model(zip_path, algo, device)
    space = model.observation_space
    if args.input_size:
        raise UsageError("--input-size is for vision and SR models: an RL model's input is its observation")
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(args.batch)]), device=model.device).float()
    net = model.policy.acting_network()
    out = (path if path.is_dir() else path.parent) / "latency"
    return net, obs, f"{algo} {zip_path}", out


def _widths(args: argparse.Namespace, low: float, high: float) -> list[float]:
    try:
        widths = parse_widths(args.widths) if args.widths else parse_widths([f"{low}:{high}:0.025"])
    except ValueError as exc:
        raise UsageError(f"--widths: {exc}") from None
    bad = [w for w in widths if not low - 1e-9 <= w <= high + 1e-9]
    if bad:
        raise UsageError(f"--widths: {bad[0]:g} is outside the model's width range [{low:g}, {high:g}]")
    return widths


def run(args: argparse.Namespace) -> int:
    """Measure, save, report; returns the exit code."""
    from usrl.deploy import WidthController, measure_latency
    from usrl.nn import width_control

    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.rounds < 2:
        raise UsageError(f"--rounds must be >= 2, got {args.rounds}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.budget_ms is not None and not args.budget_ms > 0:
        raise UsageError(f"--budget-ms must be > 0, got {args.budget_ms}")
    device = resolve_device(args.device)
    net, example, name, default_out = load_target(args, device)
    control = width_control(net)
    widths = _widths(args, control.low, control.high)
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=args.rounds + 3, unit="round", desc="usrl.latency")
    prof = measure_latency(net, example, widths, rounds=args.rounds, name=name,
                           progress=(lambda done, total: bar.update(1)) if bar is not None else None)  # fmt: skip
    if bar is not None:
        bar.close()
    out = Path(args.out) if args.out else default_out
    prof.save(out)
    d = prof.device
    print(f"{name}: {d['name']}, {d['threads']} threads, batch {d['batch']}, input {tuple(d['input_shape'])}; "
          f"noise {prof.noise_ms:.3f} ms")  # fmt: skip
    print("| width | median ms | p90 ms | MMACs | Pareto |")
    print("|---:|---:|---:|---:|:---:|")
    for r in prof.rows:
        print(f"| {r.width:.3f} | {r.median_ms:.3f} | {r.p90_ms:.3f} | {r.macs / 1e6:.2f} | "
              f"{'*' if r.width in prof.pareto else ''} |")  # fmt: skip
    if args.budget_ms is not None:
        ctl = WidthController(prof, args.budget_ms, fallback="narrowest")
        verdict = "fits" if ctl.fits else "does NOT fit (narrowest width shown)"
        print(f"budget {args.budget_ms:g} ms: width {ctl.width:g} ({ctl.expected_ms():.3f} ms expected) {verdict}")
    print(f"wrote {out / 'latency.json'}, latency.csv, latency.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.latency``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.latency", lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
