"""US-DQN (50k steps) and US-PPO (100k, its preset's budget; in test_learning_ppo.py) learn CartPole through the CLI, at the full and the smallest width.

The slowest tests of the suite (a few minutes each on 2 cores): the shipped CartPole preset
(sandwich n=4, KL distillation), seed 0, then the run's best_model.zip (chosen by full-width
evaluation) is evaluated afresh on 10 seeded episodes at widths 1.0 and 0.25.
"""

import subprocess
import sys
from pathlib import Path

from usrl.envs import make_vec_env
from usrl.evaluation import evaluate_at_width
from usrl.train import algorithms


def check_cartpole_preset_learns(algo: str, steps: int, tmp_path: Path) -> None:
    """Train ``algo``'s CartPole preset for ``steps`` through the CLI and check its best model."""
    res = subprocess.run(
        [sys.executable, "-m", "usrl.train", "--algo", algo, "--env", "CartPole-v1", "-n", str(steps), "--seed", "0",
         "--eval-freq", "5000", "--eval-episodes", "5", "--save-freq", "0", "--verbose", "0"],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    run = tmp_path / "logs" / algo / "CartPole-v1_1"
    model = algorithms()[algo].load(run / "best_model.zip")
    assert model.num_timesteps <= steps + 256
    env = make_vec_env("CartPole-v1", n_envs=2, seed=2024)
    returns = {}
    for w in (1.0, 0.25):
        env.seed(2024)
        returns[w] = evaluate_at_width(model, env, w, 10).mean_return
    assert returns[1.0] >= 195, returns
    assert returns[0.25] >= 150, returns


def test_dqn_cartpole_preset_learns_at_full_and_smallest_width(tmp_path: Path) -> None:
    check_cartpole_preset_learns("dqn", 50_000, tmp_path)
