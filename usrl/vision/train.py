"""Train a universally slimmable MobileNet with the sandwich rule and inplace distillation.

    python -m usrl.vision.train --arch us_mobilenet_v2 --data DIR
    torchrun --nproc_per_node 8 -m usrl.vision.train --arch us_mobilenet_v2 --data DIR
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m usrl.vision.train ...
    python -m usrl.vision.train --resume logs/vision/us_mobilenet_v2_1

DIR has ImageFolder trees train/<class>/ and val/<class>/ (ImageNet's layout). Each step trains
the largest width on the labels (cross-entropy with --label-smoothing), the smallest and n-2
random widths on the largest width's detached soft predictions (inplace distillation;
--distill none: every width on the labels), accumulating gradients for one SGD step (Nesterov
momentum; no weight decay on depthwise convs, BatchNorm and biases; linear or cosine decay per
step after a linear warm-up). The learning rate defaults to 0.5 per 1024 images of global batch,
US-Nets' ImageNet setting.

After every --eval-freq epochs: BatchNorm calibration on --calib-batches training batches at
each of --eval-widths, then top-1/top-5 on val. After the last epoch the same at --final-widths,
written as spectrum.csv/json/png. The run folder also receives config.yml, checkpoint.pt
(resumable, written atomically every epoch), model.pt (final weights with the calibrated
statistics of the final widths), evaluations.csv and tensorboard events.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from usrl.distributed import Distributed, report_checksum, unwrap
from usrl.nn import (
    SandwichLog,
    SandwichResult,
    check_width_range,
    sandwich_step,
    sandwich_widths,
    soft_cross_entropy,
)
from usrl.runtime import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    StopRequest,
    load_resume,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
)
from usrl.utils import (
    UsageError,
    UsageParser,
    atomic_write_csv,
    cli_main,
    next_run_dir,
    parse_widths,
    resolve_device,
    resolve_distill_flags,
    write_run_config,
)
from usrl.vision.data import (
    Augment,
    CenterCrop,
    ImageFolderDataset,
    VisionDataError,
    calibration_loader,
    check_images,
    image_samples,
)
from usrl.vision.evaluation import Shard, evaluate_widths, format_table, write_spectrum
from usrl.vision.models import ARCH_WIDTH_RANGES, ARCHS, USMobileNet, build_model

KIND = "usrl.vision"
EVAL_COLUMNS = ["epoch", "width", "macs", "params", "top1", "top5", "train_loss"]
CHECK_IMAGES_UP_TO = 50_000  # datasets up to this size get every image header checked before training


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.vision.train``."""
    p = UsageParser(
        prog="python -m usrl.vision.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", choices=ARCHS, help="default us_mobilenet_v2")
    p.add_argument("--data", help="folder with train/ and val/ ImageFolder trees")
    p.add_argument("--out", help="run folder (default: <log-folder>/vision/<arch>_<k>)")
    p.add_argument("-f", "--log-folder", default="logs", help="root of the run folders (default logs/)")
    p.add_argument("--epochs", type=int, help="default 250 (with --resume: a new total)")
    p.add_argument("--batch-size", type=int, default=256, help="images per step per process")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.5 * global batch / 1024)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=4e-5, help="on conv and linear weights, not depthwise")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear", help="decay to 0 after warm-up")
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.1, help="of the largest width's labels")
    p.add_argument("--resolution", type=int, default=224, help="training crop side")
    p.add_argument("--dropout", type=float, help="before the classifier (default 0 for v1, 0.2 for v2)")
    p.add_argument("--width-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="default: the arch's")
    p.add_argument("--n-widths", type=int, default=4, help="widths per step (sandwich rule; 1 = plain training)")
    p.add_argument(
        "--distill", choices=["soft_ce", "none"],
        help="loss of the distilled widths: soft_ce (default), cross-entropy to the full width's soft labels; "
        "none: every width learns from the labels",
    )  # fmt: skip
    p.add_argument("--no-distill", action="store_true", help=argparse.SUPPRESS)  # the spelling before --distill
    p.add_argument("--crop-scale", type=float, nargs=2, default=[0.08, 1.0], metavar=("MIN", "MAX"),
                   help="area fraction of the random-resized crop")  # fmt: skip
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (e.g. for digits)")
    p.add_argument("--jitter", type=float, default=0.4, help="brightness/contrast/saturation jitter (0: off)")
    p.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="fp16 autocast (default: on CUDA)"
    )
    p.add_argument(
        "--eval-freq", "--eval-every", dest="eval_every", type=int, metavar="N", default=1,
        help="validate every N epochs (0: only at the end)",
    )  # fmt: skip
    p.add_argument("--eval-widths", type=float, nargs="+", help="default: low, middle and high of the range")
    p.add_argument("--final-widths", nargs="+", help="spectrum grid START:STOP:STEP or a list (default: step 0.05)")
    p.add_argument("--calib-batches", type=int, default=8, help="training batches for BN calibration per width")
    p.add_argument("--workers", type=int, default=4, help="data-loading processes per training process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint.pt")
    p.add_argument("-P", "--progress", action="store_true", help="show progress bars")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1])
    return p


def _check_args(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "n_widths", "calib_batches"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    if args.eval_every < 0:
        raise UsageError(f"--eval-freq must be >= 0, got {args.eval_every}")
    _, args.no_distill = resolve_distill_flags(args.distill, None, args.no_distill, default="soft_ce")
    if args.resolution < 32:
        raise UsageError(f"--resolution must be >= 32, got {args.resolution}")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if not (0 <= args.momentum < 1 and args.weight_decay >= 0 and args.warmup_epochs >= 0):
        raise UsageError("--momentum must be in [0, 1); --weight-decay and --warmup-epochs must be >= 0")
    if not 0 <= args.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    lo, hi = args.crop_scale
    if not 0 < lo <= hi <= 1:
        raise UsageError(f"--crop-scale must satisfy 0 < MIN <= MAX <= 1, got {lo} {hi}")
    if args.jitter < 0:
        raise UsageError(f"--jitter must be >= 0, got {args.jitter}")
    arch_low, arch_high = ARCH_WIDTH_RANGES[args.arch]
    try:
        low, high = check_width_range(*(args.width_range or (arch_low, arch_high)))
    except ValueError as exc:
        raise UsageError(f"--width-range: {exc}") from None
    if low < arch_low:
        raise UsageError(f"--width-range: {args.arch} supports widths in [{arch_low:g}, {arch_high:g}], got {low:g}")
    args.width_range = [low, high]
    for w in [*(args.eval_widths or []), *final_widths(args)]:
        if not low <= w <= high:
            raise UsageError(f"width {w:g} is outside the width range [{low:g}, {high:g}]")


def final_widths(args: argparse.Namespace) -> list[float]:
    """The spectrum grid evaluated after training."""
    low, high = args.width_range
    if args.final_widths:
        return parse_widths(args.final_widths)
    return parse_widths([f"{low}:{high}:0.05"])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """SGD parameter groups: weight decay on conv and linear weights only, not on depthwise conv
    weights, BatchNorm parameters or biases (as in MobileNet training)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            depthwise = getattr(module, "groups", 1) > 1 and getattr(module, "in_per_group", 0) == 1
            if name == "weight" and p.ndim > 1 and not depthwise:
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at a step: linear warm-up, then linear or cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    widths: list[float],
    distill: bool = True,
    label_smoothing: float = 0.0,
    sync_last_only: Callable[[], Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
) -> SandwichResult[torch.Tensor]:
    """Forward and backward of one batch at every width (:func:`usrl.nn.sandwich_step`;
    gradients accumulate, no optimizer step).

    The first width is the teacher: cross-entropy to ``labels`` (with ``label_smoothing``); the
    others learn the cross-entropy to its detached softmax (``distill``) or to the labels. Each
    width does its own backward (one graph in memory at a time); under DDP ``sync_last_only``
    (the DDP module's ``no_sync``) defers the gradient all-reduce to the last width.
    """

    def forward(_learns_own: bool) -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
        return logits.float()

    def own_loss(logits: torch.Tensor, first: bool) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing if first else 0.0)

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    return sandwich_step(
        unwrap(model), widths, forward, own_loss,
        soft_cross_entropy if distill else None, backward=backward, sync_context=sync_last_only, check_finite=True,
    )  # fmt: skip


def prepare(args: argparse.Namespace) -> tuple[argparse.Namespace, Path, dict[str, Any] | None, dict[str, Any]]:
    """Validate everything (data included) before anything is written; returns (args, run dir,
    checkpoint or None, the train and val samples and class names)."""
    ckpt = None
    if args.resume:
        arch = args.arch
        args, run_dir, ckpt = load_resume(args, KIND, "epochs")
        if arch is not None and arch != ckpt["config"]["arch"]:
            raise UsageError(f"--resume: the checkpoint holds a {ckpt['config']['arch']}, not a {arch}")
    else:
        if not args.data:
            raise UsageError("--data is required (or --resume RUN_DIR)")
        args.arch = args.arch or "us_mobilenet_v2"
        args.epochs = 250 if args.epochs is None else args.epochs
        _check_args(args)
        run_dir = Path(args.out) if args.out else next_run_dir(args.log_folder, "vision", args.arch)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(f"--out: {run_dir} exists and is not empty (use --resume to continue it)")
        args.out = str(run_dir)
    try:
        train, classes = image_samples(Path(args.data) / "train")
        val, _ = image_samples(Path(args.data) / "val", classes)
        if len(train) + len(val) <= CHECK_IMAGES_UP_TO:
            check_images(train + val)
    except VisionDataError as exc:
        raise UsageError(str(exc)) from None
    if ckpt is not None and ckpt["classes"] != classes:
        raise UsageError(f"--resume: the classes in {args.data} differ from the checkpoint's")
    return args, run_dir, ckpt, {"train": train, "val": val, "classes": classes}


def _loaders(args: argparse.Namespace, data: dict[str, Any], dist: Distributed, pin: bool) -> dict[str, Any]:
    res = args.resolution
    augment = Augment(res, tuple(args.crop_scale), 0.0 if args.no_flip else 0.5, args.jitter)
    train_set = ImageFolderDataset(data["train"], data["classes"], augment)
    val_set = ImageFolderDataset(data["val"], data["classes"], CenterCrop(res))
    if len(train_set) < args.batch_size * dist.world:
        raise UsageError(
            f"--batch-size {args.batch_size} x {dist.world} processes exceeds the {len(train_set)} training images"
        )
    common = dict(
        batch_size=args.batch_size, num_workers=args.workers, pin_memory=pin, persistent_workers=args.workers > 0
    )
    sampler: torch.utils.data.DistributedSampler | None = None
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, seed=args.seed)
    return {
        "sampler": sampler,
        "train": torch.utils.data.DataLoader(train_set, shuffle=sampler is None, sampler=sampler, drop_last=True, **common),
        "calib": calibration_loader(data["train"], data["classes"], res, args.batch_size, args.workers, pin_memory=pin),
        "val": torch.utils.data.DataLoader(val_set, sampler=Shard(val_set, dist.rank, dist.world), **common),
    }  # fmt: skip


def run(args: argparse.Namespace, run_dir: Path, ckpt: dict[str, Any] | None, data: dict[str, Any]) -> int:
    """Train; returns the exit code."""
    dist = Distributed(resolve_device(args.device))
    device = dist.device
    amp = device.type == "cuda" if args.amp is None else bool(args.amp and device.type == "cuda")
    seed_everything(args.seed + dist.rank)
    low, high = args.width_range
    config = {"arch": args.arch, "num_classes": len(data["classes"]), "resolution": args.resolution,
              "width_range": (low, high)}  # fmt: skip
    if args.dropout is not None:
        config["dropout"] = args.dropout
    model: USMobileNet = build_model(config).to(device)
    config = model.config
    loaders = _loaders(args, data, dist, pin=device.type == "cuda")
    steps_per_epoch = len(loaders["train"])
    lr = args.lr if args.lr is not None else 0.5 * args.batch_size * dist.world / 1024
    optimizer = torch.optim.SGD(param_groups(model, args.weight_decay), lr=lr, momentum=args.momentum, nesterov=True)
    warmup = round(args.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(args.epochs * steps_per_epoch, warmup, args.schedule)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    generator = torch.Generator().manual_seed(args.seed)
    epoch, history, step_in_epoch = 0, [], 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
        step_in_epoch = int(ckpt.get("step_in_epoch", 0))  # > 0: the run was stopped inside this epoch
        if dist.world == 1:
            set_rng_state(ckpt["rng"], generator)
        # a new --epochs total stretches the schedule: recompute it from the current step
        scheduler.lr_lambdas[0] = lr_lambda(args.epochs * steps_per_epoch, warmup, args.schedule)
    net: nn.Module = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    eval_widths = sorted(set(args.eval_widths or [low, round((low + high) / 2, 4), high]))

    writer = None
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            write_run_config(run_dir, {"model": config, "classes": data["classes"], "args": vars(args),
                                       "command": " ".join(sys.argv)})  # fmt: skip
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(
            str(run_dir / "tb"), purge_step=epoch * steps_per_epoch + step_in_epoch if ckpt is not None else None
        )
        if args.verbose:
            print(f"{args.arch}: {len(data['train'])} train / {len(data['val'])} val images, "
                  f"{len(data['classes'])} classes, {dist.world} process(es) on {device}, "
                  f"peak lr {lr:g}, {steps_per_epoch} steps/epoch{', AMP' if amp else ''}", flush=True)  # fmt: skip

    def checkpoint() -> None:
        save_atomic(run_dir / CHECKPOINT_FILE, {
            "kind": KIND, "config": config, "classes": data["classes"], "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "args": vars(args), "history": history,
            "rng": rng_state(generator)})  # fmt: skip

    def validate(widths: list[float], progress: bool) -> list[dict[str, Any]]:
        return evaluate_widths(model, widths, loaders["calib"], args.calib_batches, loaders["val"], device, amp,
                               dist, progress and dist.main)  # fmt: skip

    global_step = epoch * steps_per_epoch + step_in_epoch
    stop, stopped = StopRequest(), False
    try:
        with stop.installed(), warnings.catch_warnings():
            # a step the AMP scaler skipped (inf gradients, as in its first steps) still counts in
            # the schedule: PyTorch's warning that the scheduler stepped first is a false alarm
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
            while epoch < args.epochs:
                if stop.requested(dist):  # every process asks as often as the others (it is a collective)
                    stopped = True
                    break
                t0 = time.perf_counter()
                model.train()
                if loaders["sampler"] is not None:
                    loaders["sampler"].set_epoch(epoch)
                bar = None
                if dist.main and args.progress:
                    from tqdm import tqdm

                    bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
                               unit="step", leave=False)  # fmt: skip
                loss_sum, n_batches = 0.0, 0
                # an epoch resumed after a stop runs its remaining steps (on a fresh shuffle)
                for images, labels in itertools.islice(loaders["train"], steps_per_epoch - step_in_epoch):
                    widths = sandwich_widths(args.n_widths, low, high, generator)
                    optimizer.zero_grad(set_to_none=True)
                    step = train_step(
                        net, images.to(device, non_blocking=True), labels.to(device, non_blocking=True), widths,
                        not args.no_distill, args.label_smoothing, getattr(net, "no_sync", None), scaler, amp,
                    )  # fmt: skip
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    global_step += 1
                    step_in_epoch += 1
                    n_batches += 1
                    first = step.widths[0].loss
                    loss_sum += first
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{first:.3f}")
                    if writer is not None and global_step % 20 == 0:
                        for key, value in SandwichLog.of(step).means().items():
                            writer.add_scalar(key, value, global_step)
                        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)
                    if step_in_epoch < steps_per_epoch and stop.requested(dist):
                        stopped = True
                        break
                if bar is not None:
                    bar.close()
                if stopped:
                    break
                epoch, step_in_epoch = epoch + 1, 0
                train_loss = loss_sum / max(1, n_batches)
                rows = []
                if args.eval_every > 0 and (epoch % args.eval_every == 0 or epoch == args.epochs):
                    rows = validate(eval_widths, args.progress)
                    history += [{**{k: r[k] for k in ("width", "macs", "params", "top1", "top5")}, "epoch": epoch,
                                 "train_loss": round(train_loss, 5)} for r in rows]  # fmt: skip
                if dist.main:
                    for r in rows:
                        writer.add_scalar(f"val/top1_w{r['width']:.2f}", r["top1"], global_step)  # type: ignore[union-attr]
                        writer.add_scalar(f"val/top5_w{r['width']:.2f}", r["top5"], global_step)  # type: ignore[union-attr]
                    atomic_write_csv(run_dir / "evaluations.csv", history, EVAL_COLUMNS)
                    checkpoint()
                    if args.verbose:
                        acc = ", ".join(f"w={r['width']:g}: {r['top1']:.2f}%" for r in rows)
                        print(f"epoch {epoch}/{args.epochs} ({time.perf_counter() - t0:.1f} s): train loss "
                              f"{train_loss:.4f}" + (f"; val top-1 {acc}" if acc else ""), flush=True)  # fmt: skip
            if stopped:
                if dist.main:
                    checkpoint()
                    print(f"usrl.vision.train: {stop.name}: checkpoint saved at epoch {epoch}, step {step_in_epoch}/"
                          f"{steps_per_epoch} of epoch {epoch + 1}; continue with: python -m usrl.vision.train "
                          f"--resume {run_dir}", file=sys.stderr)  # fmt: skip
                dist.close()
                return stop.exit_code
    except FloatingPointError as exc:
        print(f"usrl.vision.train: error: training stopped in epoch {epoch + 1}: {exc}; "
              f"the last checkpoint in {run_dir} is intact", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        if writer is not None:
            writer.close()
    if stop.signum is not None and dist.world == 1:  # came after the last epoch's check: its checkpoint is saved
        raise KeyboardInterrupt

    report_checksum(model, dist)
    spectrum = validate(final_widths(args), args.progress)
    if dist.main:
        save_atomic(run_dir / MODEL_FILE, {"kind": KIND, "config": config, "classes": data["classes"],
                                           "model": model.state_dict(), "epoch": epoch, "data": str(args.data)})  # fmt: skip
        meta = {"checkpoint": str(run_dir / MODEL_FILE), "config": config, "data": str(args.data), "split": "val",
                "epoch": epoch, "calib_batches": args.calib_batches, "batch_size": args.batch_size}  # fmt: skip
        write_spectrum(run_dir, spectrum, meta, run_dir.name)
        if args.verbose:
            print(format_table(spectrum))
            print(f"Saved {run_dir / MODEL_FILE} and {run_dir / 'spectrum.csv'} (.json, .png)", flush=True)
    dist.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.vision.train``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.vision.train", lambda: run(*prepare(build_parser().parse_args(argv))))


if __name__ == "__main__":
    raise SystemExit(main())
