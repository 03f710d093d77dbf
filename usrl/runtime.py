"""Run folders and resumable state shared by the trainers: stopping on SIGINT/SIGTERM, seeding
and RNG state capture, atomic ``torch.save``, checkpoints and ``--resume``. Depends on torch
and numpy only (the torchrun context is in :mod:`usrl.distributed`)."""

from __future__ import annotations

import argparse
import random
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from usrl.utils import UsageError, atomic_write

if TYPE_CHECKING:
    from usrl.distributed import Distributed


class StopRequest:
    """SIGINT (Ctrl-C) or SIGTERM (schedulers' preemption) as a request to stop at the next safe point.

    Inside :meth:`installed` the first such signal is recorded in ``signum``; the trainer polls
    :meth:`requested` between steps, saves and exits with :attr:`exit_code`. A second signal
    raises ``KeyboardInterrupt`` at once (files are written atomically, so nothing on disk is
    left half-written).
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM within the block (the previous handlers come back after)."""
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def requested(self, dist: Distributed | None = None) -> bool:
        """Whether a signal came; under torchrun, whether any process got one (so all stop together)."""
        if dist is None or dist.world == 1:
            return self.signum is not None
        return dist.all_sum([float(self.signum is not None)])[0] > 0

    @property
    def name(self) -> str:
        """``"SIGINT"`` or ``"SIGTERM"`` (``"SIGTERM"`` on a process that only learnt of another's signal)."""
        return signal.Signals(self.signum or signal.SIGTERM).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as shells report a process ended by it (130, 143)."""
        return 128 + int(self.signum or signal.SIGTERM)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch CPU and CUDA) and, when given, ``generator``'s
    (the sandwich widths of the vision and SR trainers), for a checkpoint."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["widths"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured (checkpoints written before it saved CUDA states
    restore the rest)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        generator.set_state(state["widths"])


def save_atomic(path: str | Path, payload: Any) -> None:
    """``torch.save(payload, path)`` through a temporary file: a kill leaves the old file or none."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


MODEL_FILE = "model.pt"  # final weights + config, in a run folder
CHECKPOINT_FILE = "checkpoint.pt"  # resumable state, in a run folder


class CheckpointError(ValueError):
    """A checkpoint path is missing, corrupt or holds something else than expected."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.pt`` file, or a run folder's ``model.pt`` (else its ``checkpoint.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, CHECKPOINT_FILE):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no {MODEL_FILE} or {CHECKPOINT_FILE}")
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    return path


def _load(path: Path, device: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # truncated zips, pickles of other things, random bytes: many error types
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}") from None


def checkpoint_kind(path: str | Path) -> str | None:
    """The ``kind`` a usrl checkpoint (a ``.pt`` file or a run folder) holds (``"usrl.vision"``,
    ``"usrl.sr"``), ``None`` for another dictionary; ``CheckpointError`` if it cannot be read."""
    data = _load(resolve_checkpoint(path), "cpu")
    return data.get("kind") if isinstance(data, dict) else None


def read_checkpoint(path: str | Path, kind: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The dictionary a usrl trainer saved with ``"kind": kind`` (``CheckpointError`` otherwise,
    naming the kind it does hold when it is another usrl checkpoint)."""
    path = resolve_checkpoint(path)
    data = _load(path, device)
    found = data.get("kind") if isinstance(data, dict) else None
    if found != kind or "config" not in data or "model" not in data:
        held = f" (it holds a {found} model)" if isinstance(found, str) else ""
        raise CheckpointError(f"{path} is not a {kind} checkpoint{held}")
    return data


def load_model(
    path: str | Path, kind: str, build: Callable[[dict[str, Any]], nn.Module], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a ``kind`` checkpoint (built by ``build(config)``), in eval mode on ``device``,
    and the checkpoint's dictionary."""
    data = read_checkpoint(path, kind, device)
    try:
        model = build(data["config"])
        model.load_state_dict(data["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{resolve_checkpoint(path)}: weights do not fit its config: {exc}") from None
    return model.to(device).eval(), data


def load_model_for_cli(
    path: str | Path,
    kind: str,
    build: Callable[[dict[str, Any]], nn.Module],
    device: str | torch.device,
    widths: list[float],
) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_model` for the command-line tools: any problem with the checkpoint, or a width
    outside the model's ``config["width_range"]``, becomes a one-line ``UsageError``."""
    try:
        model, data = load_model(path, kind, build, device)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    low, high = data["config"]["width_range"]
    for w in widths:
        if not low <= w <= high:
            raise UsageError(f"width {w:g} is outside the model's width range [{low:g}, {high:g}]")
    return model, data


def load_resume(args: argparse.Namespace, kind: str, total: str) -> tuple[argparse.Namespace, Path, dict[str, Any]]:
    """For ``--resume RUN_DIR`` (or a checkpoint file): the run's saved arguments, with this
    invocation's ``--device`` / ``--progress`` and, when given, a new total (``total`` names the
    flag: ``"steps"`` or ``"epochs"``); the run folder; and the checkpoint. Problems are one-line
    ``UsageError``s."""
    path = Path(args.resume)
    try:
        ckpt = read_checkpoint(path / CHECKPOINT_FILE if path.is_dir() else path, kind)
    except CheckpointError as exc:
        raise UsageError(f"--resume: {exc}") from None
    saved = argparse.Namespace(**ckpt["args"])
    saved.device, saved.progress, saved.resume = args.device, args.progress, args.resume
    new_total = getattr(args, total)
    if new_total is not None:
        if new_total < 1:
            raise UsageError(f"--{total} must be >= 1, got {new_total}")
        setattr(saved, total, new_total)
    run_dir = path if path.is_dir() else path.parent
    saved.out = str(run_dir)  # the folder resumed, wherever it was first written
    return saved, run_dir, ckpt
