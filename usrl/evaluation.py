"""Evaluate one trained agent at several widths."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from usrl.nn import profile, width


@dataclass
class WidthResult:
    """Returns and cost of a policy at one width."""

    width: float
    macs: int
    params: int
    mean_return: float
    std_return: float
    min_return: float
    max_return: float
    mean_length: float
    std_length: float
    n_episodes: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def policy_cost(model: BaseAlgorithm, w: float) -> dict[str, int]:
    """MACs and parameters per observation of the acting network at width ``w`` (the Q-network
    of a DQN, the actor path of an actor-critic: what deployment runs)."""
    acting = getattr(model.policy, "acting_network", None)
    net = acting() if acting is not None else model.policy
    obs_shape = model.observation_space.shape
    if obs_shape is None:
        raise ValueError(f"cannot profile a policy over {type(model.observation_space).__name__} observations")
    return profile(net, tuple(obs_shape), w)


def evaluate_at_width(
    model: BaseAlgorithm, env: VecEnv, w: float, n_episodes: int, deterministic: bool = True
) -> WidthResult:
    """Run ``n_episodes`` episodes with the policy at width ``w`` (the width is restored after)."""
    with width(model.policy, w):
        returns, lengths = evaluate_policy(
            model, env, n_eval_episodes=n_episodes, deterministic=deterministic, return_episode_rewards=True, warn=False
        )
    cost = policy_cost(model, w)
    r, ln = np.asarray(returns, dtype=float), np.asarray(lengths, dtype=float)
    return WidthResult(
        width=float(w), macs=cost["macs"], params=cost["params"],
        mean_return=float(r.mean()), std_return=float(r.std()), min_return=float(r.min()), max_return=float(r.max()),
        mean_length=float(ln.mean()), std_length=float(ln.std()), n_episodes=len(r),
    )  # fmt: skip
