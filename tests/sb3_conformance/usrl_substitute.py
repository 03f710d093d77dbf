"""A pytest plugin: Stable-Baselines3's own tests with usrl's USDQN, USPPO and USA2C in place of
DQN, PPO and A2C (``pytest -p usrl_substitute``, this folder on ``PYTHONPATH``).

usrl is imported first, so its classes subclass SB3's real ones; then every place SB3's tests
import the three algorithms from names the usrl class. Test cases parametrized only over other
algorithms (SAC, TD3, DDPG) are deselected: they do not exercise usrl.
"""

from __future__ import annotations

import inspect

import pytest
import stable_baselines3
import stable_baselines3.a2c
import stable_baselines3.dqn
import stable_baselines3.ppo
from stable_baselines3.common.base_class import BaseAlgorithm

from usrl import USA2C, USDQN, USPPO

SUBSTITUTES = {"DQN": USDQN, "PPO": USPPO, "A2C": USA2C}

for module in (stable_baselines3, stable_baselines3.dqn, stable_baselines3.ppo, stable_baselines3.a2c):
    for name, cls in SUBSTITUTES.items():
        if hasattr(module, name):
            setattr(module, name, cls)


def _algorithms(item: pytest.Item) -> list[type]:
    """The algorithm classes a test case is parametrized with."""
    callspec = getattr(item, "callspec", None)
    values = callspec.params.values() if callspec is not None else []
    return [v for v in values if inspect.isclass(v) and issubclass(v, BaseAlgorithm)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = tuple(SUBSTITUTES.values())
    keep, drop = [], []
    for item in items:
        algorithms = _algorithms(item)
        (drop if algorithms and not any(issubclass(a, ours) for a in algorithms) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
