"""SB3's identity tests for PPO and A2C over many seeds: how often US-PPO/US-A2C pass against SB3's own.

SB3's ``tests/test_identity.py`` trains PPO and A2C on its identity envs for a small fixed
budget (discrete: ``IdentityEnv``, ``IdentityEnvMultiDiscrete``, ``IdentityEnvMultiBinary``
of dimension 4, 1200 steps, ``gamma=0.4``, ``learning_rate=0.002``, PPO with ``n_epochs=4,
n_steps=256``; continuous: ``IdentityEnvBox(eps=0.5)``, PPO 1000 steps with ``n_steps=256,
n_epochs=4``, A2C 2000 steps with ``net_arch=[64, 64]``, ``log_std_init=-0.5``,
``gamma=0.95``; ``learning_rate=1e-3``) and asks a mean reward of at least 90 over 20
evaluation episodes, at one seed (3 for discrete, 0 for continuous). One seed says little about
a learner; this script runs the same settings over many seeds for SB3's class and for the usrl
class in its place (its defaults, or ``-params`` overrides for the usrl class only), and counts
passes. Runs are cached in a JSON file per variant (rerun resumes); SB3's own runs, which no
override changes, also in ``sb3_identity_sb3.json``, from which a new variant takes them instead
of training them again (a run repeats at its seed on one machine; of the 80 SB3 runs committed
here from two machines, one differed: 47.95 against 55.2, both failing). One thread.

    python benchmarks/sb3_identity.py --seeds 0-9
    python benchmarks/sb3_identity.py --seeds 0-9 -params student_weight:0.3333
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import params_tag, parse_seeds, seeds_label  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLD = 90.0
EVAL_EPISODES = 20
DIM = 4
# case -> (algo, env, budget, SB3's kwargs for it)
CASES: dict[str, tuple[str, str, int, dict[str, Any]]] = {
    "discrete A2C IdentityEnv": ("a2c", "IdentityEnv", 1200, {"gamma": 0.4, "learning_rate": 0.002}),
    "discrete A2C MultiDiscrete": ("a2c", "IdentityEnvMultiDiscrete", 1200, {"gamma": 0.4, "learning_rate": 0.002}),
    "discrete A2C MultiBinary": ("a2c", "IdentityEnvMultiBinary", 1200, {"gamma": 0.4, "learning_rate": 0.002}),
    "discrete PPO IdentityEnv": (
        "ppo", "IdentityEnv", 1200, {"gamma": 0.4, "learning_rate": 0.002, "n_epochs": 4, "n_steps": 256}
    ),
    "discrete PPO MultiDiscrete": (
        "ppo", "IdentityEnvMultiDiscrete", 1200, {"gamma": 0.4, "learning_rate": 0.002, "n_epochs": 4, "n_steps": 256}
    ),
    "discrete PPO MultiBinary": (
        "ppo", "IdentityEnvMultiBinary", 1200, {"gamma": 0.4, "learning_rate": 0.002, "n_epochs": 4, "n_steps": 256}
    ),
    "continuous A2C": (
        "a2c", "IdentityEnvBox", 2000,
        {"learning_rate": 1e-3, "gamma": 0.95, "policy_kwargs": {"net_arch": [64, 64], "log_std_init": -0.5}},
    ),
    "continuous PPO": ("ppo", "IdentityEnvBox", 1000, {"learning_rate": 1e-3, "n_steps": 256, "n_epochs": 4}),
}  # fmt: skip


def make_env(name: str) -> Any:
    """The identity env of a case, wrapped as SB3's test wraps it."""
    from stable_baselines3.common import envs
    from stable_baselines3.common.vec_env import DummyVecEnv

    if name == "IdentityEnvBox":
        return envs.IdentityEnvBox(eps=0.5)
    env = getattr(envs, name)(DIM)
    return DummyVecEnv([lambda: env])


def run_one(case: str, usrl_class: bool, seed: int, params: dict[str, Any]) -> float:
    """Train one case at one seed with SB3's class or usrl's; return the mean evaluation reward."""
    import torch as th
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    from usrl import USA2C, USPPO
    from usrl.hyperparams import apply_params, to_model_kwargs

    th.set_num_threads(1)
    algo, env_name, budget, kwargs = CASES[case]
    cls = {("a2c", False): A2C, ("ppo", False): PPO, ("a2c", True): USA2C, ("ppo", True): USPPO}[(algo, usrl_class)]
    if usrl_class:
        kwargs = to_model_kwargs(apply_params(kwargs, params))
    env = make_env(env_name)
    model = cls("MlpPolicy", env, seed=seed, **kwargs).learn(budget)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=EVAL_EPISODES, warn=False)
    return float(mean)


def main(argv: list[str] | None = None) -> int:
    from usrl import USPPO
    from usrl.hyperparams import add_params_argument, check_keys, parse_params
    from usrl.utils import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=parse_seeds, default=list(range(10)), help="0-9 or 0,3,5")
    p.add_argument("--out", type=Path, default=RESULTS)
    add_params_argument(p, "overrides for the usrl classes (e.g. student_weight:0.3333)")
    args = p.parse_args(argv)
    params = parse_params(args.hyperparams)
    check_keys(params, USPPO, "-params")
    stem = f"sb3_identity{params_tag(params)}"
    cache = args.out / f"{stem}.json"
    shared = args.out / "sb3_identity_sb3.json"
    runs: dict[str, float] = json.loads(cache.read_text()) if cache.exists() else {}
    sb3_runs: dict[str, float] = json.loads(shared.read_text()) if shared.exists() else {}
    for seed in args.seeds:
        for case in CASES:
            for usrl_class in (False, True):
                key = f"{case}|{'usrl' if usrl_class else 'sb3'}|{seed}"
                if key not in runs:
                    runs[key] = (
                        sb3_runs[key] if key in sb3_runs and not usrl_class else run_one(case, usrl_class, seed, params)
                    )
                    print(f"{key}: {runs[key]:.1f}", flush=True)
                    atomic_write_text(cache, json.dumps(runs, indent=1))
                if not usrl_class and key not in sb3_runs:
                    sb3_runs[key] = runs[key]
                    atomic_write_text(shared, json.dumps(sb3_runs, indent=1, sort_keys=True))
    command = "python benchmarks/sb3_identity.py " + " ".join(sys.argv[1:] if argv is None else argv)
    seeds = args.seeds
    lines = [
        "# SB3's identity tests over seeds: SB3's PPO/A2C against usrl's in their place",
        "",
        f"Command: `{command.strip()}`  ",
        f"usrl overrides: {', '.join(f'`{k}: {v}`' for k, v in sorted(params.items())) or 'none (the defaults)'}  ",
        f"Seeds: {seeds_label(seeds)} ({len(seeds)}); each case at SB3's budget and settings "
        f"(`tests/test_identity.py`), passing when the mean reward over {EVAL_EPISODES} episodes is >= {THRESHOLD:g}.",
        "",
        "| case | SB3 passes | usrl passes | SB3 mean reward | usrl mean reward |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in CASES:
        sb3 = [runs[f"{case}|sb3|{s}"] for s in seeds]
        us = [runs[f"{case}|usrl|{s}"] for s in seeds]
        passes = lambda xs: sum(x >= THRESHOLD for x in xs)  # noqa: E731
        lines.append(
            f"| {case} | {passes(sb3)}/{len(seeds)} | {passes(us)}/{len(seeds)} | {np.mean(sb3):.1f} | {np.mean(us):.1f} |"
        )
    atomic_write_text(args.out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
