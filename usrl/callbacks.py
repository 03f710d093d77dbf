"""Training callbacks of the CLI: evaluation at several widths, and atomic, resumable checkpoints."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from usrl.evaluation import WidthResult, evaluate_at_width
from usrl.runtime import StopRequest, rng_state
from usrl.utils import atomic_write, atomic_write_csv, atomic_write_text

EVAL_COLUMNS = ["timesteps"] + [f.name for f in fields(WidthResult)]


def read_evaluations(path: Path) -> list[dict[str, Any]]:
    """Rows of an ``evaluations.csv`` (numbers parsed); empty if the file does not exist."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k in ("timesteps", "macs", "params", "n_episodes") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def write_evaluations(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write all rows of ``evaluations.csv`` atomically."""
    atomic_write_csv(path, rows, EVAL_COLUMNS)


class PeriodicCallback(BaseCallback):
    """Calls :meth:`act` each time the env-step count crosses a multiple of ``freq`` (<= 0: never).

    Counting env steps rather than calls keeps a resumed run on the same timesteps, and
    handles several envs stepping at once.
    """

    def __init__(self, freq: int, verbose: int = 1) -> None:
        super().__init__(verbose)
        self.freq = freq
        self._bucket = 0

    def _init_callback(self) -> None:
        self._bucket = self.model.num_timesteps // self.freq if self.freq > 0 else 0

    def _on_step(self) -> bool:
        if self.freq > 0 and self.num_timesteps // self.freq > self._bucket:
            self._bucket = self.num_timesteps // self.freq
            self.act()
        return True

    def act(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class WidthEvalCallback(PeriodicCallback):
    """Every ``eval_freq`` env steps, evaluate the policy at each of ``widths`` on ``eval_env``.

    Appends one row per width to ``<run_dir>/evaluations.csv``, logs ``eval/return_w<w>`` and
    ``eval/ep_length_w<w>`` (tensorboard), and saves ``best_model.zip`` whenever the return at
    ``full_width`` beats the best so far. Also evaluates once at the end of training if the
    last evaluation was earlier, unless ``stop`` recorded a signal (the run is not over).
    """

    def __init__(
        self,
        eval_env: VecEnv,
        widths: list[float],
        eval_freq: int,
        n_eval_episodes: int,
        run_dir: Path,
        full_width: float,
        rows: list[dict[str, Any]] | None = None,
        verbose: int = 1,
        stop: StopOnSignal | None = None,
    ) -> None:
        super().__init__(eval_freq, verbose)
        self.eval_env, self.widths = eval_env, widths
        self.n_eval_episodes, self.run_dir, self.full_width = n_eval_episodes, run_dir, full_width
        self.rows = list(rows or [])
        full = [r["mean_return"] for r in self.rows if r["width"] == full_width]
        self.best = max(full) if full else -np.inf
        self.last_eval = max((r["timesteps"] for r in self.rows), default=-1)
        self.seconds = 0.0  # spent evaluating in this process
        self.stop = stop

    def act(self) -> None:
        self.evaluate()

    def _on_training_end(self) -> None:
        if self.last_eval != self.num_timesteps and not self.interrupted():
            self.evaluate()

    def interrupted(self) -> bool:
        """Whether training was stopped by a signal (no final evaluation then: the run is not over)."""
        return self.stop is not None and self.stop.signum is not None

    def evaluate(self) -> None:
        """Evaluate at every width now and write the results."""
        t0 = time.perf_counter()
        results = [evaluate_at_width(self.model, self.eval_env, w, self.n_eval_episodes) for w in self.widths]
        for res in results:
            self.rows.append({"timesteps": self.num_timesteps, **res.as_dict()})
            self.logger.record(f"eval/return_w{res.width:.2f}", res.mean_return)
            self.logger.record(f"eval/ep_length_w{res.width:.2f}", res.mean_length)
        write_evaluations(self.run_dir / "evaluations.csv", self.rows)
        self.last_eval = self.num_timesteps
        full = next((r for r in results if r.width == self.full_width), None)
        if full is not None and full.mean_return > self.best:
            self.best = full.mean_return
            atomic_write(self.run_dir / "best_model.zip", self.model.save, suffix=".zip")
        self.seconds += time.perf_counter() - t0
        if self.verbose:
            summary = "  ".join(f"w={r.width:.2f}: {r.mean_return:.1f}±{r.std_return:.1f}" for r in results)
            print(f"Eval at {self.num_timesteps} steps: {summary}", flush=True)
        self.logger.dump(self.num_timesteps)


class ResumableCheckpoint(PeriodicCallback):
    """Every ``save_freq`` env steps, save what ``--resume`` needs, each file atomically.

    ``checkpoints/rl_model_<t>_steps.zip`` (model and optimizer), the replay buffer of the
    newest checkpoint only (``replay_buffer_<t>.pkl``; older ones are deleted, they can be GBs),
    ``rng_<t>.pt`` (random states), with ``extra`` the caller's own state of that step
    (``extra_<t>.pt``, from ``torch.save``; newest only), then ``checkpoints/latest.json`` naming
    them, written last: a kill at any moment leaves the previous complete checkpoint in place.

    With ``between_rollouts``, a checkpoint that falls due is saved at the start of the next
    rollout (or at the end of training) instead: after the update on the rollout just
    collected, and on the algorithm's own step grid, so that a resumed run takes exactly the
    steps an uninterrupted one takes.
    """

    def __init__(
        self,
        save_freq: int,
        run_dir: Path,
        verbose: int = 1,
        extra: Callable[[], dict[str, Any]] | None = None,
        between_rollouts: bool = False,
    ) -> None:
        super().__init__(save_freq, verbose)
        self.dir = run_dir / "checkpoints"
        self.extra = extra
        self.between_rollouts = between_rollouts
        self._due = False
        self.buffer_bytes_per_s: float | None = None  # measured at the last replay buffer save

    def act(self) -> None:
        if self.between_rollouts:
            self._due = True
        else:
            self.save()

    def _save_if_due(self) -> None:
        if self._due:
            self._due = False
            self.save()

    def _on_rollout_start(self) -> None:
        self._save_if_due()

    def _on_training_end(self) -> None:
        self._save_if_due()

    def save(self, deadline: float | None = None) -> str:
        """Write a complete checkpoint now. With a ``deadline`` (``time.monotonic()``), the replay
        buffer is saved only if it is expected to be written by then; otherwise the checkpoint
        keeps the previous checkpoint's buffer (or none). Returns what was not saved ("" if all)."""
        t = self.num_timesteps
        model_name, rng_name = f"rl_model_{t}_steps.zip", f"rng_{t}.pt"
        atomic_write(self.dir / model_name, self.model.save, suffix=".zip")
        entry: dict[str, Any] = {"timesteps": t, "model": model_name, "rng": rng_name}
        previous = latest_checkpoint(self.dir.parent)
        skipped = ""
        off_policy = self.model if isinstance(self.model, OffPolicyAlgorithm) else None
        buffer = off_policy.replay_buffer if off_policy is not None else None
        if off_policy is not None and buffer is not None:
            size = _nbytes(buffer)
            rate = self.buffer_bytes_per_s or ASSUMED_WRITE_BYTES_PER_S
            if deadline is not None and time.monotonic() + size / rate > deadline:
                kept = previous.get("replay_buffer") if previous else None
                if kept and previous is not None:
                    entry["replay_buffer"] = kept
                    entry["replay_buffer_timesteps"] = previous.get("replay_buffer_timesteps", previous["timesteps"])
                skipped = (
                    f"the replay buffer ({size / 1e9:.1f} GB, ~{size / rate:.0f} s to write) did not fit the grace "
                    f"period; --resume continues with "
                    + (f"the buffer of step {entry['replay_buffer_timesteps']}" if kept else "an empty buffer")
                )
            else:
                buffer_name = f"replay_buffer_{t}.pkl"
                t0 = time.monotonic()
                atomic_write(self.dir / buffer_name, off_policy.save_replay_buffer, suffix=".pkl")
                self.buffer_bytes_per_s = size / max(time.monotonic() - t0, 1e-3)
                entry["replay_buffer"] = buffer_name
        atomic_write(self.dir / rng_name, lambda tmp: torch.save(rng_state(), tmp))
        if self.extra is not None:
            extra = self.extra()
            entry["extra"] = f"extra_{t}.pt"
            atomic_write(self.dir / entry["extra"], lambda tmp: torch.save(extra, tmp))
        atomic_write_text(self.dir / "latest.json", json.dumps(entry))
        for key in ("replay_buffer", "extra"):
            if previous and previous.get(key) and previous[key] != entry.get(key):
                (self.dir / previous[key]).unlink(missing_ok=True)
        if self.verbose:
            print(f"Saved checkpoint at {t} steps", flush=True)
        return skipped


ASSUMED_WRITE_BYTES_PER_S = 100e6  # until a replay buffer save has been timed


def _nbytes(buffer: Any) -> int:
    """Bytes of the arrays a replay buffer holds (what pickling it writes, near enough)."""
    total = getattr(buffer, "nbytes", None)
    if isinstance(total, int):
        return total
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    arrays += [a for v in vars(buffer).values() if isinstance(v, dict) for a in v.values() if isinstance(a, np.ndarray)]
    return int(sum(a.nbytes for a in arrays))


class StopOnSignal(StopRequest, BaseCallback):
    """SIGINT (Ctrl-C) or SIGTERM asks training to stop after the current env step.

    Inside :meth:`installed`, the first such signal is recorded (``signum``) and ends
    ``learn()`` at the next step; a second one raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        StopRequest.__init__(self)
        BaseCallback.__init__(self, verbose=0)

    def _on_step(self) -> bool:
        return self.signum is None


def latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The newest complete checkpoint's entry, or ``None`` if there is none."""
    path = run_dir / "checkpoints" / "latest.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


SEGMENT_COLUMNS = ["segment", "started_utc", "start_timesteps", "end_timesteps", "wall_s", "eval_s", "command"]


class SegmentLog(PeriodicCallback):
    """Wall time per training segment (a fresh start, or each ``--resume``) in ``segments.csv``.

    One row per segment: when it started, the env steps it started and (so far) ended at, its
    wall time and the part of it spent evaluating. The row is rewritten every ``freq`` env steps
    and at the end, so a killed segment keeps its time up to its last write.
    """

    def __init__(self, run_dir: Path, command: str, evaluation: WidthEvalCallback | None, freq: int = 10_000) -> None:
        super().__init__(freq, verbose=0)
        self.path, self.command, self.evaluation = run_dir / "segments.csv", command, evaluation
        self.rows = read_segments(self.path)
        self.t0 = time.time()
        self.row: dict[str, Any] = {}

    def _on_training_start(self) -> None:
        started = datetime.fromtimestamp(self.t0, timezone.utc).isoformat(timespec="seconds")
        self.row = {"segment": len(self.rows) + 1, "started_utc": started, "start_timesteps": self.model.num_timesteps,
                    "command": self.command}  # fmt: skip
        self.act()

    def _on_training_end(self) -> None:
        self.act()

    def act(self) -> None:
        self.row.update(
            end_timesteps=self.model.num_timesteps,
            wall_s=round(time.time() - self.t0, 1),
            eval_s=round(self.evaluation.seconds if self.evaluation is not None else 0.0, 1),
        )
        atomic_write_csv(self.path, [*self.rows, self.row], SEGMENT_COLUMNS)


def read_segments(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``segments.csv`` (numbers parsed); empty if the file does not exist."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("segment", "start_timesteps", "end_timesteps"):
            row[key] = int(row[key])
        for key in ("wall_s", "eval_s"):
            row[key] = float(row[key])
    return rows
