"""A pytest plugin: Stable-Baselines3's own tests with usrl's USDQN, USPPO and USA2C in place of
DQN, PPO and A2C (``pytest -p usrl_substitute``, this folder on ``PYTHONPATH``).

usrl is imported first, so its classes subclass SB3's real ones; then every place SB3's tests
import the three algorithms from names the usrl class. Test cases that cannot exercise usrl are
deselected: those parametrized only over other algorithms (SAC, TD3, DDPG), and those whose code
never names DQN, PPO or A2C, nor a module-level helper or constant that does (SB3's VecEnv,
logger, buffer and wrapper unit tests).
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

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


@functools.cache
def _top_level(path: Path) -> dict[str, ast.AST]:
    """A test module's top-level functions, classes and assigned names, by name."""
    nodes: dict[str, ast.AST] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            nodes[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            nodes.update({t.id: node for t in targets if isinstance(t, ast.Name)})
    return nodes


def _names_an_algorithm(path: Path, name: str, seen: set[str] | None = None) -> bool:
    """Whether ``name`` (a test function or class of the module at ``path``), or a top-level
    helper or constant it uses, names DQN, PPO or A2C."""
    seen = set() if seen is None else seen
    node = _top_level(path).get(name)
    if node is None or name in seen:
        return False
    seen.add(name)
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    used |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    used |= {a.arg for n in ast.walk(node) if isinstance(n, ast.FunctionDef) for a in n.args.args}  # fixtures
    return bool(used & SUBSTITUTES.keys()) or any(_names_an_algorithm(path, u, seen) for u in used)


def _exercises_usrl(item: pytest.Item) -> bool:
    algorithms = _algorithms(item)
    if algorithms:
        return any(issubclass(a, tuple(SUBSTITUTES.values())) for a in algorithms)
    test = getattr(item, "cls", None) or getattr(item, "function", None)
    return test is None or _names_an_algorithm(Path(item.path), test.__name__)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        (keep if _exercises_usrl(item) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
