"""One US agent against individually trained agents at each width, and the ablations.

For a task and an algorithm (--algo dqn, ppo or a2c), trains over several seeds:
  * us              the US agent: sandwich rule (n=4) + inplace distillation (the preset's loss)
  * us_no_distill   the US agent, every width on its own loss (no inplace distillation)
  * us_no_sandwich  one uniformly random width per step on its own loss (no sandwich rule)
  * individual_<w>  a plain agent of width w (n_widths=1), for w in 0.25, 0.5, 0.75, 1.0
with the algorithm's preset hyperparameters for the task's env and the same env steps each,
evaluates every model across widths on the same seeded episodes, and writes
benchmarks/results/<name>.md and <name>.png, where <name> is the task (dqn) or <task>_<algo>.
Finished (method, seed) cells are kept under benchmarks/results/cells/<name>/ and skipped on
rerun; --jobs spreads cells over processes.

The model evaluated is the final one (--select final, the default), or (--select best, as
rl-zoo3's best_model) the checkpoint with the highest return on separate selection episodes,
evaluated every tenth of training on 15 selection episodes: 5 at each of widths low / middle
/ high of the range for the US methods (their mean), all 15 at its own width for an individual
net. Those results go to <name>_best.md / .png. The same run's final weights are evaluated too,
into the --select final cells where one is missing (the selection's greedy episodes leave the
training as it is), so a --select best run needs no --select final run of the same seeds.

Models are evaluated (and selected) on their greedy actions, as SB3's evaluate_policy by default.
--select final-sampled / best-sampled (PPO and A2C) sample the actions from the policy instead, as
rl-zoo3's enjoy --stochastic: an actor-critic policy that has not yet sharpened can play well
sampled and deadlock greedily (A2C on Acrobot: -500 greedy, -113 sampled). The model trained is
the same; the results go to <name>_sampled.md / <name>_best_sampled.md and their own cells.

-params KEY:VALUE ... overrides the preset for every method (as usrl.train's -params;
policy_kwargs.<name>:VALUE sets one policy kwarg), for trying a fix against the preset's
results; such runs go to <name>_<key>-<value>.md and cells (a one-width method's cell keeps
only the overrides that change its model, and is shared otherwise).

--backend ray runs the cells as tasks on a Ray cluster (--address auto|HOST:PORT, --cpus-per-cell,
--gpus-per-cell; see benchmarks/README.md); the report is the same.

    python benchmarks/width_vs_return.py --task cartpole --seeds 0 1 2 --jobs 2
    python benchmarks/width_vs_return.py --task cartpole --algo ppo --seeds 0 1 2 --jobs 2
    python benchmarks/width_vs_return.py --task cartpole --select best --seeds 0 1 2 --jobs 2
    python benchmarks/width_vs_return.py --task cartpole --algo ppo --select best -params distill_weight:0.5
    python benchmarks/width_vs_return.py --task pong --backend ray --address auto --gpus-per-cell 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cells import (  # noqa: E402
    RayBackend,
    add_backend_arguments,
    backend_from_args,
    cell_device,
    cell_path,
    mean_std,
    params_tag,
    partial_dir,
    resuming_note,
    save_finished_cell,
    train_cells,
    value_at,
)
from intervals import (  # noqa: E402
    TOLERANCE,
    as_curve,
    interval_estimates,
    interval_lines,
    keep_notes,
    poi_panel,
)

RESULTS = Path(__file__).parent / "results"
WIDTHS = [0.25, 0.5, 0.75, 1.0]

# Classic control cells take minutes on one thread, MinAtar cells about an hour, Pong cells hours
# (they checkpoint every tenth of training and resume there). "normalise": (lo, hi) judges the
# task on (return - lo) / (hi - lo), for a return that crosses 0 (relative differences break there).
TASKS: dict[str, dict[str, Any]] = {
    "cartpole": {"env": "CartPole-v1", "steps": 50_000, "episodes": 20, "grid": 0.125},
    "acrobot": {"env": "Acrobot-v1", "steps": 100_000, "episodes": 20, "grid": 0.125},
    "pendulum": {"env": "Pendulum-v1", "steps": 100_000, "episodes": 20, "grid": 0.125},
    "minatar-breakout": {"env": "MinAtar/Breakout-v1", "steps": 1_000_000, "episodes": 20, "grid": 0.125},
    "minatar-space-invaders": {"env": "MinAtar/SpaceInvaders-v1", "steps": 1_000_000, "episodes": 20, "grid": 0.125},
    "pong": {"env": "Pong", "steps": 2_000_000, "episodes": 20, "grid": 0.25, "normalise": (-21.0, 21.0)},
    "tiny": {
        "env": "CartPole-v1",
        "steps": 400,
        "episodes": 2,
        "grid": 0.25,
        "overrides": {
            "dqn": {"learning_starts": 100, "train_freq": 50, "gradient_steps": 5, "buffer_size": 1000},
            "ppo": {"n_envs": 2, "n_steps": 100, "batch_size": 100, "n_epochs": 2},
            "a2c": {"n_envs": 2},
        },
    },
}
METHODS = ["us", "us_no_distill", "us_no_sandwich", *(f"individual_{w}" for w in WIDTHS)]
# Overrides that change only how a step's several widths learn: a method that trains one width
# per step (individual nets, the no-sandwich ablation) is the same model with or without them.
SANDWICH_ONLY_KEYS = frozenset(
    {
        "n_widths",
        "distill",
        "distill_weight",
        "distill_warmup",
        "distill_teacher",
        "student_weight",
        "grad_clip",
        "teacher_guard",
    }
)
# overrides of how the students distil: a model trained without distillation is the same without them
DISTILL_ONLY_KEYS = frozenset({"distill_weight", "distill_warmup", "distill_teacher", "teacher_guard"})
# sandwich settings added after cells began recording theirs: what a cell without the key trained with
SETTINGS_BEFORE_RECORDED: dict[str, Any] = {"distill_warmup": 0.0, "teacher_guard": None}
# overrides that leave a plain net trained at its one (full) width unchanged: an individual MLP
# net is built at full width, so its critic is full-size whatever slim_critic says
INDIVIDUAL_SAME_KEYS = SANDWICH_ONLY_KEYS | {"policy_kwargs.slim_critic"}
SELECTIONS = ("final", "best", "final-sampled", "best-sampled")
SAMPLED = "-sampled"  # a selection's suffix: evaluate and select on actions sampled from the policy
SELECT_EVALS = 10  # --select best considers a checkpoint every tenth of training (and the end's, past the last tenth)
SELECT_EPISODES = 15  # selection episodes per checkpoint, split evenly over the widths selected on
CHECKPOINTS = 10  # a cell saves a resumable checkpoint every tenth of its training
# the key of a greedy best-checkpoint cell's result that carries its training run's final-weights
# cell (the driver writes it to the final cells' folder and drops it from the best cell's file)
FINAL_WEIGHTS = "final_weights_cell"


def selection_parts(select: str) -> tuple[str, bool]:
    """A --select value as (``"final"`` or ``"best"``, whether actions are sampled)."""
    sampled = select.endswith(SAMPLED)
    return (select[: -len(SAMPLED)] if sampled else select), sampled


def selection_error(algo: str, select: str) -> str | None:
    """Why ``select`` does not fit ``algo`` (None if it does): DQN has no policy to sample."""
    if algo == "dqn" and selection_parts(select)[1]:
        return f"select {select}: sampled actions are for PPO and A2C (DQN's policy is greedy)"
    return None


def relative_gap(us: float, other: float) -> float:
    """``(us - other) / |other|``: how far the US value lies above the other's, as a fraction of
    the other's magnitude (sound for negative returns too)."""
    return (us - other) / abs(other) if other else (0.0 if us == other else float("inf"))


def best_checkpoint_callback(
    eval_env: Any, widths: list[float], every: int, episodes: int, seed: int, deterministic: bool = True
) -> Any:
    """An SB3 callback that, every ``every`` env steps and at the end, evaluates the policy at
    ``widths`` (the same seeded episodes each time; greedy actions unless ``deterministic`` is
    False) and keeps the weights with the best mean
    return in ``best_state`` (step in ``best_step``, all evaluations in ``history``, the seconds
    they took in ``seconds``)."""
    from usrl.callbacks import PeriodicCallback
    from usrl.evaluation import evaluate_at_width

    class BestCheckpoint(PeriodicCallback):
        def __init__(self) -> None:
            super().__init__(every, verbose=0)
            self.best_return, self.best_step, self.best_state = -np.inf, -1, None
            self.history: list[tuple[int, float]] = []
            self.seconds = 0.0

        def _on_training_end(self) -> None:
            if not self.history or self.history[-1][0] != self.num_timesteps:
                self.act()

        def act(self) -> None:
            t0 = time.perf_counter()
            returns = []
            for w in widths:
                eval_env.seed(seed)
                returns.append(evaluate_at_width(self.model, eval_env, w, episodes, deterministic).mean_return)
            mean = float(np.mean(returns))
            self.history.append((self.num_timesteps, mean))
            if mean > self.best_return:
                self.best_return, self.best_step = mean, self.num_timesteps
                self.best_state = copy.deepcopy(self.model.policy.state_dict())
            self.seconds += time.perf_counter() - t0

        def state(self) -> dict[str, Any]:
            """What a mid-cell checkpoint keeps of the selection so far."""
            keys = ("best_return", "best_step", "best_state", "history", "seconds")
            return {k: getattr(self, k) for k in keys}

        def restore(self, state: dict[str, Any]) -> None:
            for k, v in state.items():
                setattr(self, k, v)

    return BestCheckpoint()


def progress_callback(label: str, total: int, parts: int = 10) -> Any:
    """An SB3 callback printing one line per tenth of training (cells can train for hours)."""
    from usrl.callbacks import PeriodicCallback

    class Progress(PeriodicCallback):
        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()

        def act(self) -> None:
            minutes = (time.perf_counter() - self.t0) / 60
            print(f"{label}: {self.num_timesteps}/{total} steps, {minutes:.1f} min", flush=True)

    return Progress(max(1, total // parts), verbose=0)


def task_hyperparams(task: str, algo: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters a task's models train with: the algorithm's preset for the task's env,
    the task's own overrides, then ``params`` (-params)."""
    from usrl.envs import resolve_env
    from usrl.hyperparams import apply_params, select_preset, shipped_presets

    cfg = TASKS[task]
    spec = resolve_env(cfg["env"])
    hp = select_preset(shipped_presets(algo), spec.env_id, spec.family, f"{algo}.yml")
    hp.update(cfg.get("overrides", {}).get(algo, {}))
    return apply_params(hp, params or {})


def method_kwargs(method: str, hp: dict[str, Any], grid: float) -> tuple[dict[str, Any], list[float]]:
    """Model kwargs for a method (from the preset's) and the widths its model is evaluated at."""
    from usrl.hyperparams import to_model_kwargs

    kwargs = to_model_kwargs(hp)
    pk = dict(kwargs.get("policy_kwargs") or {})
    low, high = pk.get("width_range", (0.25, 1.0))
    if method.startswith("individual_"):
        w = float(method.split("_")[1])
        kwargs.update(n_widths=1, distill=None)
        if "net_arch" in pk:  # an MLP: a plain net with w times the units, built at that size
            scale = lambda units: [max(1, round(u * w)) for u in units]  # noqa: E731
            arch = pk["net_arch"]
            pk["net_arch"] = {k: scale(v) for k, v in arch.items()} if isinstance(arch, dict) else scale(arch)
            pk["width_range"] = (1.0, 1.0)
        else:  # a CNN: the width-w sub-network of the slimmable net, trained alone
            pk["width_range"] = (w, w)
        kwargs["policy_kwargs"] = pk
        return kwargs, [w]
    if method == "us_no_distill":
        kwargs.update(distill=None)
    elif method == "us_no_sandwich":
        kwargs.update(n_widths=1, distill=None, width_sampling="random")
    kwargs["policy_kwargs"] = pk
    return kwargs, [float(x) for x in np.round(np.arange(low, high + 1e-9, grid), 6)]


def same_model_keys(method: str) -> frozenset[str]:
    """The overrides and settings that leave a method's model as it is (it does not use them)."""
    if method.startswith("individual_"):
        return INDIVIDUAL_SAME_KEYS
    return {"us_no_sandwich": SANDWICH_ONLY_KEYS, "us_no_distill": DISTILL_ONLY_KEYS}.get(method, frozenset())


def cell_params(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The overrides that define a method's cell: those that change its model. A one-width-per-step
    method drops the others, so its cell is shared with every variant that differs only in them
    (the preset's folder when none is left), not retrained."""
    unchanged = same_model_keys(method)
    return {k: v for k, v in (params or {}).items() if k not in unchanged}


def cell_file(out: Path, task: str, algo: str, select: str, params: dict[str, Any], method: str, seed: int) -> Path:
    """Where a cell's JSON lives: ``<out>/cells/<result name of its own overrides>/<method>_s<seed>.json``."""
    return cell_path(out / "cells" / result_name(task, algo, select, cell_params(method, params)), method, seed)


CellArgs = tuple[str, str, str, int, str, str, dict[str, Any], str]  # run_cell's positional arguments


def pending_cells(
    out: Path,
    task: str,
    algo: str,
    select: str,
    params: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    device: str = "cpu",
) -> list[CellArgs]:
    """The (method, seed) cells not on disk yet, as :func:`run_cell` arguments, seed-major."""
    todo = []
    for s in seeds:
        for m in methods:
            path = cell_file(out, task, algo, select, params, m, s)
            if not path.exists():
                todo.append((task, algo, m, s, str(path.parent), select, cell_params(m, params), device))
    return todo


def resuming(cells: list[CellArgs]) -> str:
    """The note ", N of them from their last checkpoint" for cells that resume mid-training ("" if none)."""
    return resuming_note(partial_dir(c[4], c[2], c[3]) for c in cells)


def final_weights_dir(task: str, algo: str, out_dir: str | Path, params: dict[str, Any]) -> Path:
    """The folder of the --select final cells beside the best-checkpoint cells in ``out_dir`` (same
    task, algo and cell overrides)."""
    return Path(out_dir).parent / result_name(task, algo, "final", params)


def train_finals_with_best(cells: list[CellArgs]) -> list[CellArgs]:
    """``cells`` with each greedy final cell whose best-checkpoint cell is pending too replaced by
    that cell, at the place of whichever comes first: its one training run writes both (see
    :func:`run_cell`). A final cell already part-trained keeps training on its own."""

    def run(c: CellArgs) -> tuple[Any, ...]:  # what makes two cells one training run: all but select and folder
        return c[0], c[1], c[2], c[3], params_tag(c[6]), c[7]

    best = {run(c): c for c in cells if c[5] == "best"}
    merged: list[CellArgs] = []
    for c in cells:
        twin = best.get(run(c)) if c[5] == "final" else None
        if twin is not None and not partial_dir(c[4], c[2], c[3]).exists():
            c = twin
        if c not in merged:
            merged.append(c)
    return merged


def _save_cell(cell: CellArgs, result: dict[str, Any]) -> None:
    """Write a finished cell's JSON, then delete its checkpoints; a best-checkpoint cell's result
    also holds its run's final-weights cell, written unless that cell is on disk already."""
    final = result.pop(FINAL_WEIGHTS, None)
    folder = final_weights_dir(cell[0], cell[1], cell[4], cell[6])
    if final is not None and not cell_path(folder, cell[2], cell[3]).exists():
        save_finished_cell(folder, cell[2], cell[3], final)
    save_finished_cell(cell[4], cell[2], cell[3], result)


def run_cells(
    cells: list[CellArgs], jobs: int, time_limit_s: float | None = None, backend: RayBackend | None = None
) -> int:
    """Train cells in order, ``jobs`` at a time on one thread each, or on a Ray cluster (see
    :func:`cells.run_pool`), each cell's file written here as it finishes; returns the exit code
    of :func:`cells.train_cells`."""
    return train_cells(run_cell, cells, jobs, time_limit_s, describe=lambda c: f"{c[0]} {c[1]} {c[2]} seed {c[3]}",
                       save=_save_cell,
                       backend=backend)  # fmt: skip


def machine(device: str = "cpu") -> dict[str, Any]:
    """The processor, torch and GPU a cell trained on (its train time means little without them)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpus": os.cpu_count(), "torch": torch.__version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machines_line(cells: list[dict[str, Any]]) -> list[str]:
    """The report line naming the processors the cells trained on (train times compare only on one)."""
    counts: dict[str, int] = {}
    for c in cells:
        m = c.get("machine")
        cpu = f"{m['cpu']}, {m.get('cpus', '?')} CPUs, torch {m['torch']}" if m else "not recorded"
        if m and m.get("gpu"):
            cpu += f", {m['gpu']}"
        counts[cpu] = counts.get(cpu, 0) + 1
    return ["Trained on (one thread per cell): " + "; ".join(f"{cpu} ({n} cells)" for cpu, n in counts.items()) + "  "]


def _resume_cell(
    folder: Path, identity: dict[str, Any], algo_class: Any, env: Any, device: str
) -> tuple[Any, dict[str, Any]]:
    """The model and cell state of ``folder``'s newest checkpoint, or ``(None, {})`` when there is
    none; a checkpoint of another configuration (the task's steps or the preset changed) is deleted."""
    import shutil

    import torch

    from usrl.callbacks import latest_checkpoint
    from usrl.runtime import set_rng_state

    entry = latest_checkpoint(folder)
    if entry is None or "extra" not in entry:
        return None, {}
    ckpt = folder / "checkpoints"
    state = torch.load(ckpt / entry["extra"], weights_only=False)
    if state.get("cell") != identity:
        print(f"{folder}: checkpoint of another configuration, starting the cell over", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return None, {}
    model = algo_class.load(ckpt / entry["model"], env=env, device=device)
    if "replay_buffer" in entry:
        model.load_replay_buffer(ckpt / entry["replay_buffer"])
    set_rng_state(torch.load(ckpt / entry["rng"], weights_only=False))
    return model, state


def run_cell(
    task: str,
    algo: str,
    method: str,
    seed: int,
    out_dir: str,
    select: str = "final",
    params: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train and sweep one (method, seed) cell (its final model, or its best checkpoint) with the task's preset,
    ``params`` overriding it, on ``device``; returns its JSON (the caller writes it under ``out_dir``).

    A greedy best-checkpoint cell also sweeps its final weights when their --select final cell is
    not on disk: the selection's greedy episodes draw no random numbers and run on their own env,
    so the run trains the model a final cell of the same seed trains, and that cell comes with it
    under :data:`FINAL_WEIGHTS`.

    Every 1/``CHECKPOINTS`` of training the cell saves a checkpoint (the train CLI's: model,
    optimizer, replay buffer, random states, and here the selection so far) under
    :func:`partial_dir`; a cell started again after a kill resumes from the newest one."""
    from usrl.callbacks import ResumableCheckpoint
    from usrl.envs import make_vec_env, resolve_env
    from usrl.sweep import sweep
    from usrl.train import algorithms

    cfg = TASKS[task]
    spec = resolve_env(cfg["env"])
    hp = task_hyperparams(task, algo, params)
    kwargs, widths = method_kwargs(method, hp, cfg["grid"])
    frame_stack = int(hp.get("frame_stack", 4))
    env = make_vec_env(spec, n_envs=int(hp.get("n_envs", 1)), seed=seed, frame_stack=frame_stack)
    identity = {"task": task, "algo": algo, "method": method, "seed": seed, "select": select,
                "steps": cfg["steps"], "hyperparams": hp}  # fmt: skip
    folder = partial_dir(out_dir, method, seed)
    algo_class = algorithms()[algo]
    model, state = _resume_cell(folder, identity, algo_class, env, device)
    if model is None:
        model = algo_class(hp.get("policy", "MlpPolicy"), env, seed=seed, device=device, **kwargs)
    label = f"[{task} {algo}] {method} seed {seed}"
    if state:
        print(f"{label}: resuming at {model.num_timesteps}/{cfg['steps']} steps", flush=True)
    callbacks = [progress_callback(label, cfg["steps"])]
    selection = None
    chosen, sampled = selection_parts(select)
    if chosen == "best":
        low, high = model.policy.width_range
        sel_widths = [high] if method.startswith("individual_") else [low, (low + high) / 2, high]
        sel_env = make_vec_env(spec, n_envs=4, seed=20_000 + seed, frame_stack=frame_stack, eval_env=True)
        select_every = max(1, cfg["steps"] // SELECT_EVALS)
        per_width = SELECT_EPISODES // len(sel_widths)  # every model is selected on as many episodes
        selection = best_checkpoint_callback(
            sel_env, sel_widths, select_every, per_width, 20_000 + seed, deterministic=not sampled
        )
        if state:
            selection.restore(state["selection"])
        callbacks.append(selection)
    segments: list[dict[str, Any]] = list(state.get("segments", []))
    segment = {"start_steps": model.num_timesteps, "end_steps": model.num_timesteps, "wall_s": 0.0}
    t0 = time.perf_counter()

    def cell_state() -> dict[str, Any]:
        segment.update(end_steps=model.num_timesteps, wall_s=round(time.perf_counter() - t0, 1))
        return {"cell": identity, "segments": [*segments, segment],
                "selection": None if selection is None else selection.state()}  # fmt: skip

    checkpoint_every = max(1, cfg["steps"] // CHECKPOINTS)
    callbacks.append(ResumableCheckpoint(checkpoint_every, folder, verbose=0, extra=cell_state, between_rollouts=True))
    remaining = cfg["steps"] - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=callbacks, reset_num_timesteps=not state)
    cell_state()
    if segment["end_steps"] > segment["start_steps"]:  # not a cell killed while being evaluated
        segments.append(segment)
    # the train time excludes the selection episodes
    train_time = sum(s["wall_s"] for s in segments) - (selection.seconds if selection is not None else 0.0)
    eval_env = make_vec_env(spec, n_envs=4, seed=10_000 + seed, frame_stack=frame_stack, eval_env=True)

    def evaluate() -> list[dict[str, Any]]:
        if method.startswith("individual_"):
            rows = sweep(model, eval_env, [model.policy.width_range[1]], cfg["episodes"], 10_000 + seed, not sampled)
            rows[0]["width"] = widths[0]
            return rows
        return sweep(model, eval_env, widths, cfg["episodes"], 10_000 + seed, not sampled)

    selected: dict[str, Any] = {}
    final_rows = None
    if selection is not None:
        if not sampled and not cell_path(final_weights_dir(task, algo, out_dir, params or {}), method, seed).exists():
            final_rows = evaluate()
        model.policy.load_state_dict(selection.best_state)
        selected = {
            "selected_step": selection.best_step,
            "selection_history": selection.history,
            "selection_widths": sel_widths,
            "selection_episodes_per_width": per_width,
            "selection_time_s": selection.seconds,
        }
    rows = evaluate()
    result = {
        "task": task,
        "algo": algo,
        "method": method,
        "seed": seed,
        "steps": cfg["steps"],
        "env_steps": model.num_timesteps,
        "train_time_s": train_time,
        "segments": segments,
        "select": select,
        "params": params or {},
        "settings": model.us_settings(),
        "machine": machine(device),
        **selected,
        "rows": rows,
    }
    if final_rows is not None:
        result[FINAL_WEIGHTS] = {
            **{k: v for k, v in result.items() if k not in selected},
            "select": "final",
            "trained_with_select": select,
            "rows": final_rows,
        }
    print(
        f"{label}: {train_time:.0f}s"
        + (f" in {len(segments)} segments" if len(segments) > 1 else "")
        + (f", best checkpoint at {selected['selected_step']} steps" if selected else "")
        + ", returns "
        + ", ".join(f"{r['width']:.3g}:{r['mean_return']:.1f}" for r in rows),
        flush=True,
    )
    return result


def expected_settings(task: str, algo: str, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The sandwich settings (``us_settings()``) the current code gives a method's cell of this
    task and overrides, from a model built without its networks."""
    from usrl.train import algorithms

    hp = task_hyperparams(task, algo, params)
    kwargs, _ = method_kwargs(method, hp, TASKS[task]["grid"])
    model = algorithms()[algo](hp.get("policy", "MlpPolicy"), None, device="cpu", _init_setup_model=False, **kwargs)
    return model.us_settings()


def stale_cells(task: str, algo: str, params: dict[str, Any] | None, cells: list[dict[str, Any]]) -> list[str]:
    """One line per cell whose recorded settings differ from what the current code would train
    it with (a default changed since): such a cell must be retrained or its settings spelled out
    with -params. Cells from before settings were recorded are not checked."""
    expected: dict[str, dict[str, Any]] = {}
    stale = []
    for cell in cells:
        recorded = cell.get("settings")
        if recorded is None:
            continue
        recorded = {**SETTINGS_BEFORE_RECORDED, **recorded}
        method = cell["method"]
        if method not in expected:
            expected[method] = expected_settings(task, algo, method, cell_params(method, params))
        ignored = same_model_keys(method)
        diff = {
            k: (v, expected[method].get(k))
            for k, v in recorded.items()
            if k not in ignored and expected[method].get(k) != v
        }
        if diff:
            stale.append(
                f"{method} seed {cell['seed']}: "
                + ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in sorted(diff.items()))
            )
    return stale


def auc(rows: list[dict[str, Any]]) -> float:
    """Mean return over the width range (trapezoid area under the width-return curve / range)."""
    w = np.array([r["width"] for r in rows])
    m = np.array([r["mean_return"] for r in rows])
    if len(w) == 1:
        return float(m[0])
    return float(np.sum((m[1:] + m[:-1]) / 2 * np.diff(w)) / (w[-1] - w[0]))


def at(rows: list[dict[str, Any]], w: float) -> float | None:
    """The mean return at width ``w`` (None if not evaluated)."""
    return value_at(rows, w, "mean_return")


def overrides_line(params: dict[str, Any], methods: list[str]) -> str:
    """The report's line on its -params overrides, naming the methods whose cells are the preset's."""
    given = ", ".join(f"`{k}: {v}`" for k, v in sorted(params.items()))
    kept = [m for m in methods if cell_params(m, params) != params]
    if not kept:
        return f"Preset overrides, for every method: {given}  "
    return (
        f"Preset overrides: {given}; not all change every model: the cells of {', '.join(kept)} are shared with the"
        " variants (or the preset) that differ only in the others  "
    )


def result_name(task: str, algo: str, select: str = "final", params: dict[str, Any] | None = None) -> str:
    """The file stem of a task's results: the task for DQN, ``<task>_<algo>`` otherwise; ``_best`` for
    --select best, ``_sampled`` for sampled actions; then ``_<key>-<value>`` per -params override
    (sorted), so variants never share cells."""
    chosen, sampled = selection_parts(select)
    stem = task if algo == "dqn" else f"{task}_{algo}"
    return stem + ("_best" if chosen == "best" else "") + ("_sampled" if sampled else "") + params_tag(params)


def normalised(task: str, cells: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The cells with returns on the task's normalised scale (unchanged without one), and the
    name of what the report's numbers are."""
    if "normalise" not in TASKS[task]:
        return cells, "mean return"
    lo, hi = TASKS[task]["normalise"]
    scale = lambda v: (v - lo) / (hi - lo)  # noqa: E731
    out = [{**c, "rows": [{**r, "mean_return": scale(r["mean_return"])} for r in c["rows"]]} for c in cells]
    return out, f"normalised score (return - ({lo:g})) / {hi - lo:g}"


def report(
    task: str,
    algo: str,
    cells: list[dict[str, Any]],
    command: str,
    seeds: list[int],
    out: Path,
    select: str = "final",
    params: dict[str, Any] | None = None,
) -> str:
    """Write <name>.md and <name>.png from the cells; returns the markdown."""
    cells, measure = normalised(task, cells)
    chosen, sampled = selection_parts(select)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usrl.plots import draw_curves

    by_method: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by_method.setdefault(c["method"], []).append(c)
    scaled = "normalise" in TASKS[task]
    digits = 3 if scaled else 1
    fmt = lambda xs: mean_std(xs, digits)  # noqa: E731
    tfmt = lambda xs: mean_std(xs, 1)  # noqa: E731
    lines = [
        f"# Width vs return: {task} ({TASKS[task]['env']}), US-{algo.upper()}",
        "",
        f"Command: `{command}`  ",
        *([overrides_line(params, sorted(by_method))] if params else []),
        *machines_line(cells),
        f"Seeds: {', '.join(map(str, seeds))}; {TASKS[task]['steps']} env steps per model; each "
        + (
            "final model"
            if chosen == "final"
            else f"model's best checkpoint (taken every 1/{SELECT_EVALS} of training and at its end; by the mean "
            f"return of {SELECT_EPISODES} separate selection episodes: a third at each of widths low/middle/high "
            "for US methods, all at its width for individual nets)"
        )
        + f" evaluated on {TASKS[task]['episodes']} seeded episodes per width (the same episodes for every width "
        f"and method), {'actions sampled from the policy' if sampled else 'greedy actions'}. Numbers: mean over seeds ± std over seeds of each model's {measure}.",
        "",
        "| method | " + " | ".join(f"w={w}" for w in WIDTHS) + f" | area ({measure} over widths) | train time (s) |",
        "|---|" + "---:|" * (len(WIDTHS) + 2),
    ]
    individual = {w: [at(c["rows"], w) for c in by_method.get(f"individual_{w}", [])] for w in WIDTHS}
    for method in ["us", "us_no_distill", "us_no_sandwich"]:
        cs = by_method.get(method, [])
        vals = [fmt([v for c in cs if (v := at(c["rows"], w)) is not None]) for w in WIDTHS]
        lines.append(
            f"| {method} | "
            + " | ".join(vals)
            + f" | {fmt([auc(c['rows']) for c in cs])} | {tfmt([c['train_time_s'] for c in cs])} |"
        )
    ind_auc = (
        [
            auc([{"width": w, "mean_return": individual[w][i]} for w in WIDTHS])
            for i in range(min(len(v) for v in individual.values()))
        ]
        if all(individual.values())
        else []
    )
    ind_times = [c["train_time_s"] for m, cs in by_method.items() if m.startswith("individual_") for c in cs]
    lines.append(
        "| individual (one net per width) | "
        + " | ".join(fmt([v for v in individual[w] if v is not None]) for w in WIDTHS)
        + f" | {fmt(ind_auc)} | {tfmt(ind_times)} per net |"
    )
    lines.append("")
    # the means' gaps, without a verdict: one collapsed seed moves a mean across any threshold, so
    # the verdicts are the intervals' (below)
    us = by_method.get("us", [])
    gaps = []
    for w in WIDTHS:
        u = [v for c in us if (v := at(c["rows"], w)) is not None]
        ind = [v for v in individual[w] if v is not None]
        if u and ind:
            mu, mi = float(np.mean(u)), float(np.mean(ind))
            gaps.append(f"w={w}: US {mu:.{digits}f} vs individual {mi:.{digits}f}, {100 * relative_gap(mu, mi):+.1f}%")
    us_auc = float(np.mean([auc(c["rows"]) for c in us])) if us else None
    for abl in ("us_no_distill", "us_no_sandwich"):
        a = by_method.get(abl, [])
        if us_auc is not None and a:
            a_auc = float(np.mean([auc(c["rows"]) for c in a]))
            gaps.append(
                f"area: US {us_auc:.{digits}f} vs {abl} {a_auc:.{digits}f}, {100 * relative_gap(us_auc, a_auc):+.1f}%"
            )
    lines += [
        "Gaps between the means, `(US - other) / |other|` (no verdict: the verdicts are the intervals', "
        f"below; the target is US at most {100 * TOLERANCE:.0f}% below each individual net and its area at or "
        "above each ablation's):",
        "",
        *[f"- {g}" for g in gaps],
        "",
    ]
    intervals = interval_estimates(
        by_method,
        value=lambda c, w: at(c["rows"], w),
        widths_of=lambda c: [r["width"] for r in c["rows"]],
        compare_widths=WIDTHS,
        area=lambda c: auc(c["rows"]),
        sandwich=["us", "us_no_distill", "us_no_sandwich"],
    )
    lines += interval_lines(intervals, WIDTHS, measure)
    text = "\n".join(lines)

    fig, (ax, max_, pax) = plt.subplots(1, 3, figsize=(15, 4.5), gridspec_kw={"width_ratios": [3, 3, 2]})
    # a width's MACs are the same in every model that runs it (an individual net is the US net's
    # width-w sub-network, or an MLP of as many units)
    macs = {r["width"]: r["macs"] for c in cells for r in c["rows"] if "macs" in r}
    curves = [as_curve(m, intervals["curves"][m], macs) for m in ("us", "us_no_distill", "us_no_sandwich")
              if intervals["curves"].get(m)]  # fmt: skip
    if intervals["curves"].get("individual"):
        curves.append(as_curve("individual nets", intervals["curves"]["individual"], macs, points=True))
    which_values = "normalised scores" if scaled else "mean returns"
    for axis, by_macs in ((ax, False), (max_, True)):
        draw_curves(axis, curves, by_macs=by_macs)
        axis.set_xlabel("MMACs per observation" if by_macs else "width")
        axis.set_ylabel(f"{intervals['statistic']} of the seeds' {which_values} (95% CI)")
        axis.grid(alpha=0.3)
    poi_panel(pax, intervals)
    name = algo.upper()
    which = ("" if chosen == "final" else ", best checkpoints") + (", sampled actions" if sampled else "")
    ax.set_title(
        f"{TASKS[task]['env']}: one US-{name} vs individually trained {name}s\n({len(seeds)} seeds{which})", fontsize=11
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    stem = result_name(task, algo, select, params)
    fig.savefig(out / f"{stem}.png", dpi=120)
    plt.close(fig)
    from usrl.utils import atomic_write_text

    atomic_write_text(out / f"{stem}.md", keep_notes(out / f"{stem}.md", text))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--algo", choices=["dqn", "ppo", "a2c"], default="dqn")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    p.add_argument("--jobs", type=int, default=1, help="cells trained in parallel (processes)")
    p.add_argument(
        "--select",
        choices=SELECTIONS,
        default="final",
        help="evaluate the final model or the best checkpoint; -sampled: on sampled actions (PPO, A2C)",
    )
    from usrl.hyperparams import HyperparamError, add_params_argument, check_keys, parse_params
    from usrl.train import algorithms

    add_params_argument(p, "override the preset for every method; results go to <name>_<key>-<value>")
    p.add_argument("--out", type=Path, default=RESULTS)
    add_backend_arguments(p)
    args = p.parse_args(argv)
    backend = backend_from_args(p, args)
    if error := selection_error(args.algo, args.select):
        p.error(f"--{error}")

    try:
        params = parse_params(args.hyperparams)
        check_keys(params, algorithms()[args.algo], "-params")
    except HyperparamError as e:
        p.error(str(e))
    if "n_timesteps" in params:  # run_cell trains every model for the task's steps, never the preset's
        p.error(
            f"-params n_timesteps is not used here: every model trains the task's {TASKS[args.task]['steps']} steps"
        )
    command = "python benchmarks/width_vs_return.py " + " ".join(sys.argv[1:] if argv is None else argv)
    todo = pending_cells(
        args.out, args.task, args.algo, args.select, params, args.methods, args.seeds, cell_device(backend)
    )
    done = len(args.methods) * len(args.seeds) - len(todo)
    print(f"{len(todo)} cells to train{resuming(todo)}, {done} done already", flush=True)
    code = run_cells(todo, args.jobs, backend=backend)
    if code:
        return code
    cells = [
        json.loads(cell_file(args.out, args.task, args.algo, args.select, params, m, s).read_text())
        for s in args.seeds
        for m in args.methods
    ]
    stale = stale_cells(args.task, args.algo, params, cells)
    if stale:
        print(
            f"error: {len(stale)} cells were trained with other settings than the current code gives them "
            "(retrain them, or spell the settings out with -params): " + "; ".join(stale),
            file=sys.stderr,
        )
        return 2
    print(report(args.task, args.algo, cells, command, args.seeds, args.out, args.select, params))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
