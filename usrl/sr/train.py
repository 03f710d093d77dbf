"""Train a universally slimmable WDSR with the sandwich rule and inplace distillation.

    python -m usrl.sr.train --arch wdsr_a --scale 2 --data DIR --steps 300000
    torchrun --nproc_per_node 4 -m usrl.sr.train --arch wdsr_b --scale 2 --data DIR
    python -m usrl.sr.train --resume logs/sr/wdsr_a_x2_1

DIR has DIV2K's layout (DIV2K_train_HR/, optionally DIV2K_train_LR_bicubic/X<s>/, and the same
for "valid"). Each step trains the largest width on the HR patches (L1), the smallest and
n-2 random widths on the largest width's detached output (inplace distillation; mixed with the
HR loss by --distill-weight < 1; --distill none: every width on the HR loss), accumulating
gradients for one Adam step. The run folder receives config.yml, checkpoint.pt (resumable,
written atomically every --save-freq steps), model.pt (final weights), evaluations.csv (PSNR on the
valid split at a few widths every --eval-freq steps) and tensorboard events.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from usrl.distributed import Distributed, report_checksum, unwrap
from usrl.nn import (
    SandwichLog,
    SandwichResult,
    check_width_range,
    get_distill_loss,
    profile,
    sandwich_step,
    sandwich_widths,
    width_control,
)
from usrl.runtime import (
    StopRequest,
    load_resume,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
)
from usrl.sr.checkpoint import CHECKPOINT_FILE, MODEL_FILE
from usrl.sr.data import ImageDataset, Pair, PatchDataset, SRDataError, find_pairs
from usrl.sr.metrics import psnr
from usrl.sr.models import ARCHS, LR_SIZE, SCALES, WDSR, build_model
from usrl.utils import (
    UsageError,
    UsageParser,
    atomic_write_csv,
    cli_main,
    next_run_dir,
    resolve_device,
    resolve_distill_flags,
    write_run_config,
)

EVAL_COLUMNS = ["step", "width", "macs", "params", "psnr"]
"""evaluations.csv: MACs and parameters for an LR input of ``LR_SIZE``, PSNR on the valid split."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.sr.train``."""
    p = UsageParser(
        prog="python -m usrl.sr.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", "--model", dest="model", choices=ARCHS, default="wdsr_a", help="default wdsr_a")
    p.add_argument("--scale", type=int, choices=SCALES, default=2)
    p.add_argument("--data", help="data folder in DIV2K's layout")
    p.add_argument("--out", help="run folder (default: <log-folder>/sr/<model>_x<scale>_<k>)")
    p.add_argument("-f", "--log-folder", default="logs", help="root of the run folders (default logs/)")
    p.add_argument("--steps", type=int, help="optimizer steps (default 300000; with --resume: a new total)")
    p.add_argument("--batch-size", type=int, default=16, help="patches per step (per process under torchrun)")
    p.add_argument("--patch-size", type=int, default=48, help="LR patch side")
    p.add_argument("--repeat", type=int, default=20, help="visits of each image per data epoch")
    p.add_argument("--cache", action="store_true", help="keep decoded images in memory")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-step", type=int, help="halve the learning rate every N steps (default: steps / 3)")
    p.add_argument("--n-feats", type=int, default=32)
    p.add_argument("--n-resblocks", type=int, default=16)
    p.add_argument("--width-range", type=float, nargs=2, default=[0.25, 1.0], metavar=("LOW", "HIGH"))
    p.add_argument("--n-widths", type=int, default=4, help="widths per step (sandwich rule; 1 = plain training)")
    p.add_argument("--distill-weight", type=float, default=1.0, help="other widths: w * distill + (1 - w) * HR loss")
    p.add_argument(
        "--distill", choices=["mse", "l1", "none"],
        help="loss of the distilled widths (default mse); none: every width learns from the HR images",
    )  # fmt: skip
    # the spellings before --distill (still accepted; a run saves them)
    p.add_argument("--distill-loss", choices=["l1", "mse"], help=argparse.SUPPRESS)
    p.add_argument("--no-distill", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--eval-freq", "--eval-every", dest="eval_every", type=int, metavar="N", default=5000,
        help="PSNR on the valid split every N steps (0: never)",
    )  # fmt: skip
    p.add_argument("--eval-widths", type=float, nargs="+", help="default: low, middle and high of the range")
    p.add_argument(
        "--save-freq",
        "--save-every",
        dest="save_every",
        type=int,
        metavar="N",
        default=5000,
        help="resumable checkpoint every N steps",
    )
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint.pt")
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1])
    return p


def _check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "patch_size", "repeat", "n_feats", "n_resblocks", "n_widths"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if args.lr_step is not None and args.lr_step < 1:
        raise UsageError(f"--lr-step must be >= 1, got {args.lr_step}")
    if args.save_every < 1:
        raise UsageError(f"--save-freq must be >= 1, got {args.save_every}")
    if args.eval_every < 0:
        raise UsageError(f"--eval-freq must be >= 0, got {args.eval_every}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    args.distill_loss, args.no_distill = resolve_distill_flags(
        args.distill, args.distill_loss, args.no_distill, default="mse"
    )
    if not 0.0 <= args.distill_weight <= 1.0:
        raise UsageError(f"--distill-weight must be in [0, 1], got {args.distill_weight}")
    try:
        low, high = check_width_range(*args.width_range)
    except ValueError as exc:
        raise UsageError(f"--width-range: {exc}") from None
    for w in args.eval_widths or []:
        if not low <= w <= high:
            raise UsageError(f"--eval-widths: {w:g} is outside the width range [{low:g}, {high:g}]")


def train_step(
    model: nn.Module,
    lr: torch.Tensor,
    hr: torch.Tensor,
    widths: list[float],
    distill: bool,
    distill_weight: float,
    sync_last_only: Any = None,
    distill_loss: str = "mse",
) -> SandwichResult[torch.Tensor]:
    """Forward and backward of one batch at every width (:func:`usrl.nn.sandwich_step`;
    gradients accumulate, no optimizer step).

    The first width is the teacher: it learns L1 to ``hr``; the others learn ``distill_loss``
    (``"mse"`` or ``"l1"``) to its detached output (``distill``), mixed with L1 to ``hr`` by
    ``1 - distill_weight``. Purely distilled widths do not train the width-independent skip
    branch (see ``WDSR.forward``): with an L1 loss its gradient does not shrink as a student
    nears the teacher, and three students' worth of it swamped the full width's HR signal in
    our runs (PSNR fell below bicubic). Each width does its own backward; under DDP
    ``sync_last_only`` (the DDP module's ``no_sync``) defers the gradient all-reduce to the
    last width.
    """
    return sandwich_step(
        unwrap(model),
        widths,
        forward=lambda learns_own: model(lr, skip_grad=learns_own),
        own_loss=lambda sr, _first: F.l1_loss(sr, hr),
        distill=get_distill_loss(distill_loss) if distill else None,
        distill_weight=distill_weight,
        backward=lambda loss: loss.backward(),
        sync_context=sync_last_only,
        check_finite=True,
    )


@torch.no_grad()
def evaluate_psnr(model: WDSR, dataset: ImageDataset, widths: list[float], device: torch.device) -> dict[float, float]:
    """Mean RGB PSNR (border of ``scale`` shaved) of ``model`` on ``dataset`` at each width."""
    control = width_control(model)
    previous = control.width
    was_training = model.training
    model.eval()
    out: dict[float, list[float]] = {w: [] for w in widths}
    try:
        for i in range(len(dataset)):
            _, lr, hr = dataset[i]
            lr = lr[None].to(device)
            for w in widths:
                control.width = w
                out[w].append(psnr(model(lr)[0].cpu(), hr, shave=model.scale))
    finally:
        control.width = previous
        model.train(was_training)
    return {w: float(np.mean(v)) for w, v in out.items()}


def prepare(
    args: argparse.Namespace,
) -> tuple[argparse.Namespace, Path, dict[str, Any] | None, dict[str, list[Pair]]]:
    """Validate everything (data included) before anything is written; returns (args, run dir,
    checkpoint, the checked image pairs of the train and valid splits)."""
    ckpt = None
    if args.resume:
        args, run_dir, ckpt = load_resume(args, "usrl.sr", "steps")
    else:
        if not args.data:
            raise UsageError("--data is required (or --resume RUN_DIR)")
        args.steps = 300_000 if args.steps is None else args.steps
        _check_args(args)
        run_dir = Path(args.out) if args.out else next_run_dir(args.log_folder, "sr", f"{args.model}_x{args.scale}")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(f"--out: {run_dir} exists and is not empty (use --resume to continue it)")
        args.out = str(run_dir)
    try:
        pairs = {split: find_pairs(args.data, split, args.scale) for split in ("train", "valid")}
    except SRDataError as exc:
        raise UsageError(str(exc)) from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if len(pairs["train"]) * args.repeat < args.batch_size * world:
        raise UsageError(
            f"--batch-size {args.batch_size} x {world} processes exceeds the {len(pairs['train'])} training images "
            f"x --repeat {args.repeat} patches per data epoch"
        )
    for pair in pairs["train"]:
        if min(pair.hr_size) // args.scale < args.patch_size:
            raise UsageError(f"--patch-size {args.patch_size} exceeds the LR size of {pair.hr}")
    return args, run_dir, ckpt, pairs


def run(args: argparse.Namespace, run_dir: Path, ckpt: dict[str, Any] | None, pairs: dict[str, list[Pair]]) -> int:
    """Train; returns the exit code."""
    dist = Distributed(resolve_device(args.device))
    device = dist.device
    seed_everything(args.seed + dist.rank)
    config = dict(arch=args.model, scale=args.scale, n_feats=args.n_feats, n_resblocks=args.n_resblocks,
                  width_range=tuple(args.width_range))  # fmt: skip
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    lr_step = args.lr_step or max(1, args.steps // 3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=0.5)
    generator = torch.Generator().manual_seed(args.seed)
    step, eval_rows = 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, eval_rows = int(ckpt["step"]), list(ckpt.get("eval_rows", []))
        if dist.world == 1:
            set_rng_state(ckpt["rng"], generator)
    net: nn.Module = model
    if dist.world > 1:
        # purely distilled widths leave the skip branch out of their graph (see WDSR.forward)
        unused = not args.no_distill and args.distill_weight >= 1.0 and args.n_widths > 1
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
        )

    train_set = PatchDataset(pairs["train"], args.scale, args.patch_size, args.repeat,
                             args.cache)  # fmt: skip
    valid_set = ImageDataset(pairs["valid"], args.scale)
    sampler: torch.utils.data.DistributedSampler | None = None
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, seed=args.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=args.workers,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip
    low, high = model.config["width_range"]
    eval_widths = sorted(set(args.eval_widths or [low, round((low + high) / 2, 4), high]))
    costs = {w: profile(model, (3, LR_SIZE[1], LR_SIZE[0]), w) for w in eval_widths} if dist.main else {}

    writer = None
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            write_run_config(run_dir, {"model": config, "args": vars(args), "command": " ".join(sys.argv)})
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if ckpt is not None else None)
    bar = None
    if dist.main and args.progress:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=step, unit="step", desc="usrl.sr.train")

    def checkpoint() -> None:
        payload = {"kind": "usrl.sr", "config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "step": step, "args": vars(args), "eval_rows": eval_rows,
                   "rng": rng_state(generator)}  # fmt: skip
        save_atomic(run_dir / CHECKPOINT_FILE, payload)

    model.train()
    epoch = step * args.batch_size // max(1, len(train_set))
    t0, t_step = time.perf_counter(), step
    stop, stopped = StopRequest(), False
    try:
        with stop.installed():
            while step < args.steps:
                if sampler is not None:
                    sampler.set_epoch(epoch)
                for lr_img, hr_img in loader:
                    if step >= args.steps:
                        break
                    widths = sandwich_widths(args.n_widths, low, high, generator)
                    optimizer.zero_grad(set_to_none=True)
                    trained = train_step(
                        net, lr_img.to(device, non_blocking=True), hr_img.to(device, non_blocking=True), widths,
                        not args.no_distill, args.distill_weight, getattr(net, "no_sync", None), args.distill_loss,
                    )  # fmt: skip
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{trained.widths[0].loss:.4f}")
                    if writer is not None and step % 50 == 0:
                        for key, value in SandwichLog.of(trained).means().items():
                            writer.add_scalar(key, value, step)
                        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    if dist.main and args.eval_every > 0 and (step % args.eval_every == 0 or step == args.steps):
                        result = evaluate_psnr(model, valid_set, eval_widths, device)
                        for w, value in result.items():
                            eval_rows.append({"step": step, "width": w, **costs[w], "psnr": round(value, 4)})
                            writer.add_scalar(f"eval/psnr_w{w:.2f}", value, step)  # type: ignore[union-attr]
                        atomic_write_csv(run_dir / "evaluations.csv", eval_rows, EVAL_COLUMNS)
                        if args.verbose:
                            rate = (step - t_step) / (time.perf_counter() - t0)
                            text = ", ".join(f"w={w:g}: {v:.2f} dB" for w, v in result.items())
                            print(f"step {step}/{args.steps} ({rate:.1f} steps/s): valid PSNR {text}", flush=True)
                    if dist.main and (step % args.save_every == 0 or step == args.steps):
                        checkpoint()
                    if step < args.steps and stop.requested(dist):  # a collective: every process asks each step
                        stopped = True
                        break
                if stopped:
                    break
                epoch += 1
            if stopped:
                if dist.main:
                    checkpoint()
                    print(f"usrl.sr.train: {stop.name}: checkpoint saved at step {step}; continue with: "
                          f"python -m usrl.sr.train --resume {run_dir}", file=sys.stderr)  # fmt: skip
                dist.close()
                return stop.exit_code
    except FloatingPointError as exc:
        print(f"usrl.sr.train: error: training stopped at step {step + 1}: {exc}; "
              f"the last checkpoint in {run_dir} is intact", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    if stop.signum is not None and dist.world == 1:  # came after the last step's check: its checkpoint is saved
        raise KeyboardInterrupt
    report_checksum(model, dist)
    if dist.main:
        save_atomic(
            run_dir / MODEL_FILE, {"kind": "usrl.sr", "config": config, "model": model.state_dict(), "step": step}
        )
        if args.verbose:
            print(f"Saved {run_dir / MODEL_FILE}", flush=True)
    dist.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.sr.train``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv

    def body() -> int:
        return run(*prepare(build_parser().parse_args(argv)))

    return cli_main("usrl.sr.train", body)


if __name__ == "__main__":
    raise SystemExit(main())
