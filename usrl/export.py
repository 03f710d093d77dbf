"""Export a trained US-DQN for acting: a small zip of the Q-network's weights.

    python -m usrl.export logs/dqn/Pong_1 --out pong_us_dqn.zip
    python -m usrl.export agent.zip --out agent_small.zip --dtype float32

The zip holds the slimmable Q-network only (every width in its range), in float16 by default:
no target network, no optimizer state, no replay buffer. ``USDQN.load`` accepts it for acting,
``python -m usrl.sweep`` for sweeping; training on from it (``-i``) starts a fresh optimizer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usrl.utils import UsageError, UsageParser, cli_main

DTYPES = ("float16", "float32")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.export``."""
    p = UsageParser(
        prog="python -m usrl.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", help="a DQN run folder (logs/dqn/Pong_1) or a saved model zip")
    p.add_argument("--out", required=True, help="the zip to write")
    p.add_argument("--dtype", choices=DTYPES, default="float16", help="weight precision (default float16)")
    p.add_argument(
        "--which", choices=["best", "final"], default="final", help="for a run folder: the final model or best_model.zip"
    )
    return p


def _run(argv: list[str]) -> int:
    import torch

    from usrl.agents import USDQN
    from usrl.sweep import locate_model

    args = build_parser().parse_args(argv)
    zip_path, algo, _ = locate_model(Path(args.model), args.which, "dqn")
    if algo != "dqn":
        raise UsageError(f"{args.model} is a {algo} model; only DQN models export to an acting zip")
    out = Path(args.out)
    if out.suffix != ".zip":
        raise UsageError(f"--out must end in .zip, got {out}")
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
