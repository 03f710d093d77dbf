"""Export a trained model: one width as plain torch layers, or a US-DQN's small acting zip.

    python -m usrl.export logs/dqn/Pong_1 --width 0.5 --out pong_w0.5.onnx      # RL: actions out
    python -m usrl.export logs/vision/us_mobilenet_v2_1 --width 0.5 --out mnv2_w0.5.pt2
    python -m usrl.export logs/sr/wdsr_a_x2_1 --width 0.25 --out wdsr_w0.25.onnx
    python -m usrl.export logs/dqn/Pong_1 --out pong_us_dqn.zip                  # every width, float16

With ``--width``: ``.onnx``, ``.pt2`` (``torch.export``) or ``.pt`` (pickled module), equal in
output to the slimmable model at that width, batch dynamic (SR: height and width too). An RL
run exports its acting network with the deterministic action on top (argmax for discrete
actions, the mean clipped to the bounds for continuous ones; input: float32 observations as the
env gives them, images 0-255); a vision run its classifier (BN calibrated for the width,
from ``--data`` when the checkpoint has no statistics for it); an SR run its network.

Without ``--width`` (DQN runs): a ``.zip`` of the slimmable Q-network only (every width), in
float16 by default: no target network, optimizer state or replay buffer. ``USDQN.load`` accepts
it for acting, ``python -m usrl.sweep`` for sweeping; training on from it (``-i``) starts a
fresh optimizer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from usrl.utils import UsageError, UsageParser, cli_main

DTYPES = ("float16", "float32")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.export``."""
    p = UsageParser(
        prog="python -m usrl.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", help="an RL run folder or model zip, a vision or SR run folder or .pt")
    p.add_argument("--out", required=True, help="the file to write: .onnx, .pt2, .pt (with --width) or .zip")
    p.add_argument("--width", type=float, help="export this width as plain torch layers")
    p.add_argument("--dtype", choices=DTYPES, default="float16", help=".zip: weight precision (default float16)")
    p.add_argument(
        "--which", choices=["best", "final"], default="final", help="for an RL run: the final model or best_model.zip"
    )
    p.add_argument("--algo", help="algorithm of a bare RL model zip (default dqn)")
    p.add_argument("--data", help="vision: data folder for BN calibration (default: the training data)")
    p.add_argument("--calib-batches", type=int, default=8, help="vision: batches for BN calibration")
    p.add_argument("--batch-size", type=int, default=256, help="vision: calibration batch size")
    p.add_argument("--workers", type=int, default=4, help="vision: data-loading processes")
    return p


def _export_width(args: argparse.Namespace) -> int:
    import torch

    from usrl.nn.export import EXPORT_FORMATS, export_fixed_width

    out = Path(args.out)
    if out.suffix not in EXPORT_FORMATS:
        raise UsageError(f"--out: unknown format {out.suffix or '(none)'} with --width; use one of "
                         f"{', '.join(EXPORT_FORMATS)}")  # fmt: skip
    from usrl.sweep import is_rl_model_path, load_rl_model, locate_model

    path = Path(args.model)
    if is_rl_model_path(path):
        from usrl.agents.export import deterministic_actor

        zip_path, algo, _ = locate_model(path, args.which, args.algo or "dqn")
        model = load_rl_model(zip_path, algo)
        low, high = model.policy.width_range
        if not low <= args.width <= high:
            raise UsageError(f"--width {args.width:g} is outside the model's width range [{low:g}, {high:g}]")
        try:
            actor = deterministic_actor(model, args.width)
        except TypeError as exc:
            raise UsageError(str(exc)) from None
        example = torch.as_tensor(np.stack([model.observation_space.sample() for _ in range(2)])).float()
        _save(actor, example, out, (0,), "observation", "action")
        print(
            f"wrote {out}: {algo} acting network at width {args.width:g}, input (N, {', '.join(map(str, example.shape[1:]))})"
        )
        return 0
    from usrl.runtime import CheckpointError, checkpoint_kind

    try:
        kind = checkpoint_kind(path)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if kind == "usrl.vision":
        from usrl.vision.export import export_width

        what = export_width(str(path), args.width, out, args.data, args.calib_batches, args.batch_size, args.workers,
                            "cpu")  # fmt: skip
        print(f"wrote {out}: {what}")
        return 0
    if kind == "usrl.sr":
        from usrl.sr.checkpoint import load_model_for_cli

        model, data = load_model_for_cli(path, "cpu", [args.width])
        static = export_fixed_width(model, args.width)
        _save(static, torch.rand(2, 3, 24, 24), out, (0, 2, 3), "lr", "sr")
        print(f"wrote {out}: {data['config']['arch']} x{data['config']['scale']} at width {args.width:g}, "
              "input (N, 3, H, W) in [0, 1]")  # fmt: skip
        return 0
    raise UsageError(f"{path} is not an RL run or zip, nor a usrl vision or SR checkpoint")


def _save(module: Any, example: Any, out: Path, dims: tuple[int, ...], inp: str, outp: str) -> None:
    from usrl.nn.export import save_exported

    try:
        save_exported(module, example, out, dims, inp, outp)
    except ImportError as exc:
        raise UsageError(str(exc)) from None


def _run(argv: list[str]) -> int:
    import torch

    from usrl.agents import USDQN
    from usrl.sweep import locate_model

    args = build_parser().parse_args(argv)
    if args.width is not None:
        return _export_width(args)
    zip_path, algo, _ = locate_model(Path(args.model), args.which, args.algo or "dqn")
    if algo != "dqn":
        raise UsageError(f"{args.model} is a {algo} model; only DQN models export to an acting zip")
    out = Path(args.out)
    if out.suffix != ".zip":
        raise UsageError(f"--out must end in .zip without --width (an acting zip), got {out}")
    try:
        model = USDQN.load(zip_path, device="cpu")
    except Exception as exc:
        raise UsageError(f"cannot load {zip_path}: {type(exc).__name__}: {exc}") from None
    from usrl.utils import atomic_write

    atomic_write(out, lambda tmp: model.save_acting(tmp, dtype=getattr(torch, args.dtype)), suffix=".zip")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {args.dtype}) from {zip_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.export``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.export", lambda: _run(argv))


if __name__ == "__main__":
    raise SystemExit(main())
