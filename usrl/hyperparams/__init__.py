"""Hyperparameter presets shipped with usrl, and the parsing of user overrides.

Presets are YAML files, one per algorithm (``dqn.yml``), keyed like rl-zoo3's: an exact env
id first, then the env's family (``atari``, ``minatar``). Values stay in their readable form
(``lin_1e-3``, ``"usrl.agents.USMinAtarCNN"``) until :func:`to_model_kwargs` turns them into
constructor arguments, so the resolved hyperparameters can be saved as they are.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
from importlib import resources
from typing import Any

import yaml

# keys a preset may hold besides the algorithm's constructor arguments
RUN_KEYS = {"n_timesteps", "policy", "n_envs", "frame_stack", "eval_freq", "save_freq"}
# constructor arguments the CLI sets itself
CLI_OWNED = {"policy", "env", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model"}


class HyperparamError(ValueError):
    """A preset or an override is malformed or names an unknown key."""


def allowed_keys(algo_class: type) -> set[str]:
    """Keys a preset for ``algo_class`` may hold."""
    params = set(inspect.signature(algo_class).parameters) - CLI_OWNED
    return params | RUN_KEYS


def load_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse a presets file; :class:`HyperparamError` if it is not a mapping of mappings."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise HyperparamError(f"{source} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise HyperparamError(f"{source} must map env ids/families to mappings of hyperparameters")
    return data


def shipped_presets(algo: str) -> dict[str, Any]:
    """The presets shipped for ``algo`` (e.g. ``"dqn"``)."""
    text = resources.files("usrl.hyperparams").joinpath(f"{algo}.yml").read_text()
    return load_yaml(text, f"usrl/hyperparams/{algo}.yml")


def select_preset(presets: dict[str, Any], env_id: str, family: str, source: str) -> dict[str, Any]:
    """The entry for ``env_id``, else for its ``family``; :class:`HyperparamError` if neither exists."""
    for key in (env_id, family):
        if key in presets:
            return dict(presets[key])
    raise HyperparamError(
        f"no hyperparameters for {env_id} in {source} (presets: {', '.join(presets)}); "
        "give them with -conf FILE or -params key:value"
    )


def check_keys(hyperparams: dict[str, Any], algo_class: type, source: str) -> None:
    """:class:`HyperparamError` naming the first unknown key (``policy_kwargs.<name>`` is known
    when its algorithm takes ``policy_kwargs``)."""
    keys = {k.split(".", 1)[0] if k.startswith(f"{_NESTED}.") and k[len(_NESTED) + 1 :] else k for k in hyperparams}
    unknown = sorted(keys - allowed_keys(algo_class))
    if unknown:
        raise HyperparamError(f"unknown hyperparameter {unknown[0]!r} in {source} for {algo_class.__name__}")


_NESTED = "policy_kwargs"


def apply_params(hyperparams: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``hyperparams`` with ``overrides`` applied: a key replaces the preset's value, as in
    rl-zoo3; ``policy_kwargs.<name>`` sets that one policy kwarg and keeps the preset's others
    (``policy_kwargs.slim_critic:False``)."""
    out = dict(hyperparams)
    for key, value in overrides.items():
        if not key.startswith(f"{_NESTED}."):
            out[key] = value
            continue
        nested = out.get(_NESTED) or {}
        if isinstance(nested, str):
            nested = parse_value(nested)
        if not isinstance(nested, dict):
            raise HyperparamError(f"policy_kwargs must be a mapping, got {nested!r}")
        out[_NESTED] = {**nested, key[len(_NESTED) + 1 :]: value}
    return out


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Attribute):  # nn.ReLU, usrl.agents.USMinAtarCNN: kept as a dotted name
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            return ".".join([node.id, *reversed(parts)])
    if isinstance(node, ast.Name) and node.id in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[node.id]
    return ast.literal_eval(node)


def parse_value(text: str) -> Any:
    """A ``-params`` value: a Python literal, ``dict(...)`` of literals, or else a plain string."""
    try:
        return _literal(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, TypeError):
        pass
    if text in ("null", "none"):
        return None
    if text in ("true", "false"):
        return text == "true"
    return text


def add_params_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """Add rl-zoo3's ``-params KEY:VALUE ...`` flag (alias ``--hyperparams``); parse it with :func:`parse_params`."""
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE", help=help)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["key:value", ...]`` into a dict; :class:`HyperparamError` for an item without ``key:``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise HyperparamError(f"malformed -params item {item!r}: expected key:value")
        out[key.strip()] = parse_value(value.strip())
    return out


def import_object(path: str) -> Any:
    """Import ``package.module.Name``; ``nn.X`` / ``th.X`` stand for ``torch.nn.X`` / ``torch.X``."""
    if path.startswith("nn."):
        path = "torch." + path
    elif path.startswith("th."):
        path = "torch." + path[3:]
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise HyperparamError(f"cannot import {path!r}") from None


def linear_schedule(initial: float) -> Any:
    """A value (learning rate, clip range) decaying linearly from ``initial`` to 0 over training (rl-zoo3's ``lin_``)."""

    def schedule(progress_remaining: float) -> float:
        # SB3 may overshoot the last rollout past the total (progress < 0): stay at 0, never negative
        return max(progress_remaining, 0.0) * initial

    return schedule


_CLASS_KEYS = {"features_extractor_class", "activation_fn", "optimizer_class", "replay_buffer_class"}
_SCHEDULE_KEYS = {"learning_rate", "clip_range", "clip_range_vf"}


def _convert(key: str, value: Any) -> Any:
    if key in _CLASS_KEYS and isinstance(value, str):
        return import_object(value)
    if key in _SCHEDULE_KEYS and isinstance(value, str):
        if value.startswith("lin_"):
            try:
                return linear_schedule(float(value[4:]))
            except ValueError:
                raise HyperparamError(f"malformed {key} {value!r}: expected lin_<number>") from None
        raise HyperparamError(f"malformed {key} {value!r}: expected a number or lin_<number>")
    if isinstance(value, dict):
        return {k: _convert(k, v) for k, v in value.items()}
    if key == "width_range" and isinstance(value, list):
        return tuple(value)
    return value


def to_model_kwargs(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from resolved hyperparameters (run keys removed, strings turned
    into schedules and classes)."""
    kwargs = {k: _convert(k, v) for k, v in hyperparams.items() if k not in RUN_KEYS}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = _convert("policy_kwargs", parse_value(kwargs["policy_kwargs"]))
    if "policy_kwargs" in kwargs and not isinstance(kwargs["policy_kwargs"], dict):
        raise HyperparamError(f"policy_kwargs must be a mapping, got {kwargs['policy_kwargs']!r}")
    return kwargs
