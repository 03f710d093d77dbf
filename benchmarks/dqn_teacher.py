"""Which teacher should US-DQN's narrow widths distil, and how much should they weigh?

A fast proxy for what held the Pong main job back (US-DQN at -21 for 700k steps where the same
recipe with ``n_widths=1`` learned): SB3's own DQN + HER test task (10-bit flipping, the
hyperparameters of SB3's ``test_her.py::test_performance_her``, which asks > 90% training
success after 1500 steps), one seed per run, each variant on the same seeds:

- ``n_widths=1``: plain DQN on the full width (the reference);
- ``online``: the US-Nets definition (students distil the Q-network's own full-width output);
- ``online, averaged``: the same, students' losses weighted 1/3 (averaged, not summed);
- ``target``: students distil the target network's full-width output;
- ``target, averaged``: both (the Pong preset).

Per run: the step at which the training success rate (last 50 episodes, at least 30 of them)
first reaches 90%, the training success at 1500 steps (SB3's criterion), and greedy success at
widths 0.25/0.5/0.75/1.0 over 50 fixed-seed episodes. Runs are cached in a JSON file (rerunning
resumes); the report gives means over seeds with 95% bootstrap intervals.

    python benchmarks/dqn_teacher.py --seeds 0-9 --steps 3000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import parse_seeds  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WIDTHS = (0.25, 0.5, 0.75, 1.0)
VARIANTS: dict[str, dict[str, Any]] = {
    "n_widths=1": {"n_widths": 1},
    "online": {},
    "online, averaged": {"student_weight": 1 / 3},
    "target": {"distill_teacher": "target"},
    "target, averaged": {"distill_teacher": "target", "student_weight": 1 / 3},
}
SB3_STEPS = 1500  # SB3's test_performance_her budget


def run_one(kwargs: dict[str, Any], seed: int, steps: int) -> dict[str, Any]:
    """Train one US-DQN + HER on 10-bit flipping; return its learning speed and greedy success."""
    import torch as th
    from stable_baselines3 import HerReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.envs import BitFlippingEnv

    from usrl import USDQN

    th.set_num_threads(1)

    class Watch(BaseCallback):
        first: int | None = None
        at_sb3_budget: float | None = None

        def _on_step(self) -> bool:
            buf = self.model.ep_success_buffer
            if self.first is None and len(buf) >= 30 and np.mean(buf) >= 0.9:
                self.first = self.num_timesteps
            if self.at_sb3_budget is None and self.num_timesteps >= SB3_STEPS:
                self.at_sb3_budget = float(np.mean(buf)) if buf else 0.0
            return True

    env = make_vec_env(lambda: BitFlippingEnv(n_bits=10, continuous=False), 2)
    model = USDQN(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 5, "goal_selection_strategy": "future"},
        learning_rate=2e-3,
        train_freq=1,
        gradient_steps=2,
        learning_starts=20,
        exploration_final_eps=0.02,
        target_update_interval=100,
        seed=seed,
        batch_size=32,
        buffer_size=int(1e5),
        stats_window_size=50,
        **kwargs,
    )
    watch = Watch()
    model.learn(steps, callback=watch)
    greedy = {}
    probe = BitFlippingEnv(n_bits=10, continuous=False)
    for w in WIDTHS:
        solved = 0
        for episode in range(50):
            obs, _ = probe.reset(seed=10_000 + episode)
            done, info = False, {}
            while not done:
                action, _ = model.predict(obs, deterministic=True, width=w)
                obs, _, term, trunc, info = probe.step(int(action))
                done = term or trunc
            solved += bool(info.get("is_success", False))
        greedy[f"{w:.2f}"] = solved / 50
    return {"first_90": watch.first, "train_success_1500": watch.at_sb3_budget, "greedy": greedy}


def _fmt_ci(values: list[float]) -> str:
    from usrl.stats import bootstrap_ci

    lo, hi = bootstrap_ci(values)
    return f"{np.mean(values):.2f} [{lo:.2f}, {hi:.2f}]"


def report(cells: dict[str, Any], seeds: list[int], steps: int, command: str) -> str:
    """Markdown report from the cached runs of every variant on ``seeds``."""
    lines = [
        "# US-DQN: which teacher, what student weight (HER 10-bit flipping)",
        "",
        f"Command: `{command}`. {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), {steps} env steps per run, "
        "SB3's test_performance_her hyperparameters (2 envs, lr 2e-3, 2 gradient steps per step, "
        "target copied every 100 steps), 4 widths per step for the US variants, MSE distillation. "
        "Means over seeds with 95% percentile-bootstrap intervals (`usrl.stats.bootstrap_ci`).",
        "",
        "| variant | seeds reaching 90% training success | median step of reaching it | "
        "training success at 1500 steps (SB3 asks > 0.9) | "
        + " | ".join(f"greedy success w={w}" for w in WIDTHS)
        + " |",
        "|---|---|---|---|" + "---|" * len(WIDTHS),
    ]
    for name in VARIANTS:
        runs = [cells[f"{name}|{s}|{steps}"] for s in seeds]
        firsts = [r["first_90"] for r in runs]
        reached = [f for f in firsts if f is not None]
        # seeds that never reach 90% count as beyond the budget for the median
        median = np.median([f if f is not None else np.inf for f in firsts])
        median_txt = f"{median:.0f}" if np.isfinite(median) else f"> {steps}"
        row = [
            name,
            f"{len(reached)}/{len(runs)}",
            median_txt,
            _fmt_ci([r["train_success_1500"] for r in runs]),
            *(_fmt_ci([r["greedy"][f"{w:.2f}"] for r in runs]) for w in WIDTHS),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(cells: dict[str, Any], seeds: list[int], steps: int, path: Path) -> None:
    """Greedy success against width, one line per variant, bootstrap bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usrl.stats import bootstrap_ci

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in VARIANTS:
        runs = [cells[f"{name}|{s}|{steps}"] for s in seeds]
        per_w = [[r["greedy"][f"{w:.2f}"] for r in runs] for w in WIDTHS]
        mean = [np.mean(v) for v in per_w]
        ci = np.array([bootstrap_ci(v) for v in per_w])
        ax.plot(WIDTHS, mean, marker="o", label=name)
        ax.fill_between(WIDTHS, ci[:, 0], ci[:, 1], alpha=0.15)
    ax.set_xlabel("width")
    ax.set_ylabel("greedy success (50 episodes)")
    ax.set_title(f"US-DQN + HER, 10-bit flipping, {steps} steps, {len(seeds)} seeds\n95% bootstrap bands")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-9", help="seeds: 0-9 or 0,3,5 (default 0-9)")
    parser.add_argument("--steps", type=int, default=3000, help="env steps per run (default 3000)")
    parser.add_argument("--out", type=Path, default=RESULTS / "dqn_teacher.md", help="report path (.md)")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        print(f"dqn_teacher: bad --seeds {args.seeds!r} (use 0-9 or 0,3,5)", file=sys.stderr)
        return 2
    if args.steps < SB3_STEPS or not seeds:
        print(f"dqn_teacher: --steps must be >= {SB3_STEPS} and --seeds non-empty", file=sys.stderr)
        return 2
    cache = args.out.with_suffix(".json")
    cells: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [(n, s) for n in VARIANTS for s in seeds if f"{n}|{s}|{args.steps}" not in cells]
    for k, (name, seed) in enumerate(todo, 1):
        t = time.time()
        cells[f"{name}|{seed}|{args.steps}"] = run_one(VARIANTS[name], seed, args.steps)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(cells, indent=1, sort_keys=True))
        tmp.replace(cache)
        print(
            f"[{k}/{len(todo)}] {name} seed {seed}: {cells[f'{name}|{seed}|{args.steps}']} ({time.time() - t:.0f}s)",
            flush=True,
        )
    command = "python benchmarks/dqn_teacher.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.write_text(report(cells, seeds, args.steps, command.strip()))
    plot(cells, seeds, args.steps, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
