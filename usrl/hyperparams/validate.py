"""Check a run's hyperparameters when it is set up, before anything is written or trained.

SB3 checks many values only when they are first used: a negative ``batch_size`` fails when
learning starts, hours into an Atari run. :func:`check_hyperparams` applies each algorithm's
rules to the resolved hyperparameters (preset, ``-conf``, ``-params``, a resumed run's config)
and raises :class:`~usrl.hyperparams.HyperparamError` naming the key, the value and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class _Error(ValueError):
    pass


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(low: int, high: float = math.inf, extra: tuple[int, ...] = ()) -> Callable[[Any], str | None]:
    def rule(v: Any) -> str | None:
        if _is_int(v) and (int(v) in extra or low <= v <= high):
            return None
        bound = f">= {low}" if high == math.inf else f"in [{low}, {high:g}]"
        also = f" (or {', '.join(map(str, extra))})" if extra else ""
        return f"must be an integer {bound}{also}"

    return rule


def _real(low: float, high: float = math.inf, low_open: bool = False) -> Callable[[Any], str | None]:
    def rule(v: Any) -> str | None:
        ok = _is_number(v) and (v > low if low_open else v >= low) and v <= high
        if ok:
            return None
        left = ">" if low_open else ">="
        return f"must be a finite number {left} {low:g}" + ("" if high == math.inf else f" and <= {high:g}")

    return rule


def _schedule(low_open: float = 0.0) -> Callable[[Any], str | None]:
    """A positive number, or ``lin_<positive number>`` (a linear decay)."""

    def rule(v: Any) -> str | None:
        if isinstance(v, str) and v.startswith("lin_"):
            try:
                x = float(v[4:])
            except ValueError:
                return "must be a number > 0 or lin_<number > 0>"
            return None if math.isfinite(x) and x > low_open else "must be a number > 0 or lin_<number > 0>"
        if callable(v):
            return None
        return None if _is_number(v) and v > low_open else "must be a number > 0 or lin_<number > 0>"

    return rule


def _optional(rule: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else rule(v)


def _train_freq(v: Any) -> str | None:
    if _is_int(v) and v >= 1:
        return None
    if isinstance(v, (list, tuple)) and len(v) == 2 and _is_int(v[0]) and v[0] >= 1 and v[1] in ("step", "episode"):
        return None
    return "must be an integer >= 1 or [n >= 1, 'step' | 'episode']"


def _width_range(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v) and 0 < v[0] <= v[1] <= 1:
        return None
    return "must be [low, high] with 0 < low <= high <= 1"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


UNIT = _real(0.0, 1.0)
TEACHER_GUARD = lambda v: None if v in ("entropy", "drift", None) else "must be entropy, drift or null"  # noqa: E731
COMMON: dict[str, Callable[[Any], str | None]] = {
    "learning_rate": _schedule(),
    "gamma": UNIT,
    "max_grad_norm": _real(0.0, low_open=True),
    "n_widths": _int(1),
    "distill_weight": UNIT,
    "distill_warmup": UNIT,
    "student_weight": _real(0.0, low_open=True),
    "distill_teacher": lambda v: None if v in ("online", "target", "rollout") else "must be online, target or rollout",
    "n_timesteps": _int(1),
    "n_envs": _int(1),
    "frame_stack": _int(1),
    "eval_freq": _int(-(10**18)),
    "save_freq": _int(-(10**18)),
    "rollout_width": _optional(_real(0.0, 1.0, low_open=True)),
    "stats_window_size": _int(1),
}
RULES: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "dqn": {
        "buffer_size": _int(1),
        "learning_starts": _int(0),
        "batch_size": _int(1),
        "tau": UNIT,
        "train_freq": _train_freq,
        "gradient_steps": _int(1, extra=(-1,)),
        "n_steps": _int(1),
        "target_update_interval": _int(1),
        "exploration_fraction": UNIT,
        "exploration_initial_eps": UNIT,
        "exploration_final_eps": UNIT,
        "distill_temperature": _real(0.0, low_open=True),
        "double_q": _bool,
        "optimize_memory_usage": _bool,
    },
    "ppo": {
        "n_steps": _int(1),
        "batch_size": _int(1),
        "n_epochs": _int(1),
        "gae_lambda": UNIT,
        "clip_range": _schedule(),
        "clip_range_vf": _optional(_schedule()),
        "normalize_advantage": _bool,
        "ent_coef": _real(0.0),
        "vf_coef": _real(0.0),
        "target_kl": _optional(_real(0.0, low_open=True)),
        "teacher_guard": TEACHER_GUARD,
        "sde_sample_freq": _int(-1),
    },
    "a2c": {
        "n_steps": _int(1),
        "gae_lambda": UNIT,
        "ent_coef": _real(0.0),
        "vf_coef": _real(0.0),
        "rms_prop_eps": _real(0.0, low_open=True),
        "use_rms_prop": _bool,
        "teacher_guard": TEACHER_GUARD,
        "normalize_advantage": _bool,
        "sde_sample_freq": _int(-1),
    },
}


def _fail(key: str, value: Any, rule: str) -> None:
    raise _Error(f"hyperparameter {key}={value!r} {rule}")


def check_hyperparams(algo: str, hp: dict[str, Any]) -> None:
    """Check resolved hyperparameters of ``algo`` (``"dqn"``, ``"ppo"``, ``"a2c"``); the first
    violation raises ``ValueError`` naming the key, the value and the rule."""
    rules = {**COMMON, **RULES.get(algo, {})}
    for key, rule in rules.items():
        if key in hp and (message := rule(hp[key])):
            _fail(key, hp[key], message)
    policy_kwargs = hp.get("policy_kwargs") or {}
    if isinstance(policy_kwargs, dict) and "width_range" in policy_kwargs:
        if message := _width_range(policy_kwargs["width_range"]):
            _fail("policy_kwargs.width_range", policy_kwargs["width_range"], message)
    n_envs = int(hp.get("n_envs", 1))
    if algo == "dqn" and _is_int(hp.get("batch_size", 32)) and _is_int(hp.get("buffer_size", 1_000_000)):
        batch, buffer = int(hp.get("batch_size", 32)), int(hp.get("buffer_size", 1_000_000))
        if batch > buffer:
            _fail("batch_size", batch, f"must be <= buffer_size ({buffer})")
    if algo == "ppo":
        rollout = int(hp.get("n_steps", 2048)) * n_envs
        if hp.get("normalize_advantage", True):
            if rollout <= 1:
                _fail(
                    "n_steps", hp.get("n_steps", 2048), f"times n_envs ({n_envs}) must be > 1 with normalize_advantage"
                )
            if int(hp.get("batch_size", 64)) <= 1:
                _fail("batch_size", hp.get("batch_size", 64), "must be > 1 with normalize_advantage")
    for key in ("use_sde",):
        if hp.get(key):
            _fail(key, hp[key], "must be false: gSDE is not supported by US algorithms")
