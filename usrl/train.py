"""The main job: train a universally slimmable agent, zoo-style.

    python -m usrl.train --algo dqn --env Pong
    python -m usrl.train --algo dqn --env CartPole-v1 -n 50000 --eval-freq 5000 -P
    python -m usrl.train --algo ppo --env CartPole-v1 -P
    python -m usrl.train --resume logs/dqn/Pong_1
    python -m usrl.train --resume logs/dqn/Pong_1 -n 1500000     # continue to a larger total

A run folder ``<log-folder>/<algo>/<Env>_<k>/`` receives config.yml (resolved hyperparameters,
command line, versions), the final model zip, best_model.zip (best full-width evaluation),
resumable checkpoints, evaluations.csv (one row per evaluation and width), SB3 Monitor files
and tensorboard events.
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from usrl.hyperparams import (
    HyperparamError,
    add_params_argument,
    apply_params,
    check_keys,
    load_yaml,
    parse_params,
    parse_value,
    select_preset,
    shipped_presets,
    to_model_kwargs,
)
from usrl.utils import UsageError, UsageParser, cli_main, write_run_config

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

DEFAULT_EVAL_WIDTHS = [0.25, 0.5, 0.75, 1.0]
MAX_ATARI_EVAL_ENVS = 20
DEFAULT_RUN_FREQ = 10_000  # env steps between evaluations / checkpoints when neither flag nor preset says


def final_model_path(run_dir: Path, env_id: str) -> Path:
    """Where a run folder keeps its final model: ``<run_dir>/<env id>.zip`` (``/`` becomes ``-``)."""
    return run_dir / f"{env_id.replace('/', '-')}.zip"


def algorithms() -> dict[str, type[BaseAlgorithm]]:
    """The algorithms ``--algo`` accepts."""
    from usrl.agents import USA2C, USDQN, USPPO

    return {"dqn": USDQN, "ppo": USPPO, "a2c": USA2C}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.train``."""
    p = UsageParser(
        prog="python -m usrl.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--algo", default="dqn", help="algorithm: dqn, ppo or a2c")
    p.add_argument(
        "--env",
        help="env: Atari short name (Pong), full id (PongNoFrameskip-v4, ALE/Pong-v5), CartPole-v1, MinAtar/Breakout-v1 ...",
    )
    p.add_argument("-n", "--n-timesteps", type=int, help="training env steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-f", "--log-folder", default="logs", help="root of the run folders (default logs/)")
    p.add_argument("-tb", "--tensorboard-log", help="tensorboard root (default: the run folder)")
    p.add_argument(
        "--eval-freq",
        type=int,
        help="evaluate every N env steps (<= 0: only at the end; default: the preset's, or 10000)",
    )
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes per width and evaluation")
    p.add_argument(
        "--eval-widths", type=float, nargs="+", default=DEFAULT_EVAL_WIDTHS, metavar="W", help="widths to evaluate"
    )
    p.add_argument(
        "--width-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="width range of the net (preset: 0.25 1.0)"
    )
    p.add_argument("--n-widths", type=int, help="widths per gradient step (sandwich rule; 1 = plain training)")
    p.add_argument("--distill", choices=["mse", "huber", "kl", "none"], help="inplace distillation loss")
    add_params_argument(
        p,
        'override hyperparameters, e.g. learning_rate:1e-4 policy_kwargs:"dict(net_arch=[64])" '
        "(replaces the preset's policy_kwargs) or policy_kwargs.slim_critic:False (sets one of them)",
    )
    p.add_argument("-conf", "--conf-file", help="a presets YAML to use instead of the shipped one")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar")
    p.add_argument(
        "--save-freq",
        type=int,
        help="resumable checkpoint every N env steps (<= 0: none; default: the preset's, or 10000)",
    )
    p.add_argument("--n-envs", type=int, help="parallel training envs (default: the preset's, or 1)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    p.add_argument(
        "--grace-period", type=float, default=30.0, metavar="S",
        help="on Ctrl-C/SIGTERM, seconds allowed for the checkpoint; a replay buffer that would take longer "
        "is not saved (default 30)",
    )  # fmt: skip
    p.add_argument("-i", "--trained-agent", metavar="ZIP", help="continue training this saved model (new run folder)")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    return p


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, for YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def versions() -> dict[str, str]:
    """Versions of what a run depends on."""
    import gymnasium
    import stable_baselines3
    import torch

    import usrl

    out = {"usrl": usrl.__version__, "python": platform.python_version(), "torch": str(torch.__version__),
           "stable_baselines3": stable_baselines3.__version__, "gymnasium": gymnasium.__version__}  # fmt: skip
    try:
        import ale_py

        out["ale_py"] = str(ale_py.__version__)
    except ImportError:
        pass
    return out


@dataclass
class Job:
    """Everything a run needs, validated before anything is written."""

    algo: str
    env_name: str
    env_id: str
    family: str
    seed: int
    hyperparams: dict[str, Any]
    model_kwargs: dict[str, Any]
    eval_widths: list[float]
    eval_freq: int
    eval_episodes: int
    save_freq: int
    device: str
    progress: bool
    verbose: int
    run_dir: Path
    tensorboard_log: str | None  # None: the run folder
    command: str
    trained_agent: str | None = None
    resume: dict[str, Any] | None = None
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    grace_period: float = 30.0
    invocation: str = ""  # this segment's command line (a resumed run keeps its first one as ``command``)

    @property
    def n_timesteps(self) -> int:
        return int(self.hyperparams["n_timesteps"])


def _check_width_args(widths: list[float], width_range: tuple[float, float]) -> None:
    from usrl.nn import check_width_range

    try:
        low, high = check_width_range(*width_range)
    except ValueError as exc:
        raise UsageError(f"--width-range: {exc}") from None
    for w in widths:
        if not (math.isfinite(w) and low <= w <= high):
            raise UsageError(f"--eval-widths: {w:g} is outside the width range [{low:g}, {high:g}]")


def _resolve_hyperparams(
    args: argparse.Namespace, algo_class: type[BaseAlgorithm], env_id: str, family: str
) -> dict[str, Any]:
    if args.conf_file:
        path = Path(args.conf_file)
        if not path.is_file():
            raise UsageError(f"-conf: no such file: {path}")
        presets, source = load_yaml(path.read_text(), str(path)), str(path)
    else:
        presets, source = shipped_presets(args.algo), f"usrl/hyperparams/{args.algo}.yml"
    hp = select_preset(presets, env_id, family, source)
    check_keys(hp, algo_class, source)
    overrides = parse_params(args.hyperparams)
    check_keys(overrides, algo_class, "-params")
    hp = apply_params(hp, overrides)
    policy_kwargs = hp.get("policy_kwargs") or {}
    if isinstance(policy_kwargs, str):
        policy_kwargs = parse_value(policy_kwargs)
    if not isinstance(policy_kwargs, dict):
        raise HyperparamError(f"policy_kwargs must be a mapping, got {policy_kwargs!r}")
    if args.width_range is not None:
        from usrl.nn import check_width_range

        try:
            check_width_range(*args.width_range)
        except ValueError as exc:
            raise UsageError(f"--width-range: {exc}") from None
        policy_kwargs["width_range"] = list(args.width_range)
    hp["policy_kwargs"] = policy_kwargs
    if args.n_widths is not None:
        hp["n_widths"] = args.n_widths
    if args.distill is not None:
        hp["distill"] = None if args.distill == "none" else args.distill
    if args.n_timesteps is not None:
        hp["n_timesteps"] = args.n_timesteps
    if args.n_envs is not None:
        hp["n_envs"] = args.n_envs
    hp.setdefault("n_envs", 1)
    hp.setdefault("policy", "MlpPolicy")
    for key in ("eval_freq", "save_freq"):  # run settings a preset may suggest; the flags win
        value = getattr(args, key)
        hp[key] = value if value is not None else hp.get(key, DEFAULT_RUN_FREQ)
        if isinstance(hp[key], float) and hp[key].is_integer():
            hp[key] = int(hp[key])
        if not isinstance(hp[key], int) or isinstance(hp[key], bool):
            raise UsageError(f"{key} must be an integer, got {hp[key]!r}")
    for key in ("n_timesteps", "n_envs"):
        value = hp.get(key)
        if isinstance(value, float) and value.is_integer():
            hp[key] = value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{key} must be a positive integer, got {value!r}")
    n_widths = hp.get("n_widths", 4)
    if not isinstance(n_widths, int) or isinstance(n_widths, bool) or n_widths < 1:
        raise UsageError(f"n_widths must be an integer >= 1, got {n_widths!r}")
    _check(args.algo, hp)
    return hp


def _check(algo: str, hp: dict[str, Any]) -> None:
    from usrl.hyperparams.validate import check_hyperparams

    try:
        check_hyperparams(algo, hp)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def prepare(args: argparse.Namespace, argv: list[str]) -> Job:
    """Validate the command line and resolve everything; writes nothing."""
    from usrl.envs import UnknownEnvError, resolve_env

    command = "python -m usrl.train " + shlex.join(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if not (math.isfinite(args.grace_period) and args.grace_period >= 0):
        raise UsageError(f"--grace-period must be a number of seconds >= 0, got {args.grace_period}")
    if args.resume:
        job = _prepare_resume(args, command)
        job.invocation, job.grace_period = command, args.grace_period
        return job
    if not args.env:
        raise UsageError("--env is required (or --resume RUN_DIR)")
    algos = algorithms()
    if args.algo not in algos:
        raise UsageError(f"unknown algorithm {args.algo!r}; choose from {', '.join(algos)}")
    if args.eval_episodes < 1:
        raise UsageError(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    try:
        spec = resolve_env(args.env)
    except UnknownEnvError as exc:
        raise UsageError(str(exc)) from None
    algo_class = algos[args.algo]
    try:
        hp = _resolve_hyperparams(args, algo_class, spec.env_id, spec.family)
        model_kwargs = to_model_kwargs(hp)
    except HyperparamError as exc:
        raise UsageError(str(exc)) from None
    width_range = tuple(hp["policy_kwargs"].get("width_range", (0.25, 1.0)))
    _check_width_args(args.eval_widths, width_range)
    if args.trained_agent:
        _check_trained_agent(algo_class, args.trained_agent)
    from usrl.utils import next_run_dir

    run_dir = next_run_dir(args.log_folder, args.algo, spec.short_name)
    return Job(
        algo=args.algo, env_name=args.env, env_id=spec.env_id, family=spec.family, seed=args.seed,
        hyperparams=hp, model_kwargs=model_kwargs, eval_widths=sorted(set(args.eval_widths)),
        eval_freq=hp.pop("eval_freq"), eval_episodes=args.eval_episodes, save_freq=hp.pop("save_freq"), device=args.device, progress=args.progress,
        verbose=args.verbose, run_dir=run_dir, tensorboard_log=args.tensorboard_log, command=command,
        trained_agent=args.trained_agent, grace_period=args.grace_period,
    )  # fmt: skip


def _check_trained_agent(algo_class: type[BaseAlgorithm], path: str) -> None:
    if not Path(path).is_file():
        raise UsageError(f"-i: no such file: {path}")
    try:
        algo_class.load(path, device="cpu")
    except Exception as exc:  # a corrupt or truncated zip raises many kinds of errors
        raise UsageError(
            f"-i: cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt file'}"
        ) from None


def _prepare_resume(args: argparse.Namespace, command: str) -> Job:
    from usrl.callbacks import latest_checkpoint, read_evaluations

    run_dir = Path(args.resume)
    config_path = run_dir / "config.yml"
    if not config_path.is_file():
        raise UsageError(f"--resume: {run_dir} is not a run folder (no config.yml)")
    try:
        cfg = yaml.safe_load(config_path.read_text())
        _check(cfg["algo"], {**cfg["hyperparams"], "eval_freq": cfg["eval"]["freq"], "save_freq": cfg["save_freq"]})
        model_kwargs = to_model_kwargs(cfg["hyperparams"])
        entry = latest_checkpoint(run_dir)
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--resume: cannot read {config_path} or its checkpoint: {exc}") from None
    if entry is not None:
        for key in ("model", "replay_buffer", "rng"):
            if key in entry and not (run_dir / "checkpoints" / entry[key]).is_file():
                raise UsageError(f"--resume: checkpoint file missing: {run_dir / 'checkpoints' / entry[key]}")
    done = entry["timesteps"] if entry else 0
    if args.n_timesteps is not None:  # continue to a new total: recorded in config.yml when training starts
        if args.n_timesteps < done:
            raise UsageError(f"-n {args.n_timesteps} is below the {done} steps the run's checkpoint has done")
        cfg["hyperparams"]["n_timesteps"] = args.n_timesteps
    rows = [r for r in read_evaluations(run_dir / "evaluations.csv") if r["timesteps"] <= done]
    return Job(
        algo=cfg["algo"], env_name=cfg["env"], env_id=cfg["env_id"], family=cfg["family"], seed=cfg["seed"],
        hyperparams=cfg["hyperparams"], model_kwargs=model_kwargs, eval_widths=cfg["eval"]["widths"],
        eval_freq=cfg["eval"]["freq"], eval_episodes=cfg["eval"]["episodes"], save_freq=cfg["save_freq"],
        device=args.device, progress=args.progress, verbose=args.verbose, run_dir=run_dir,
        tensorboard_log=cfg["tensorboard_log"], command=cfg["command"], trained_agent=cfg.get("trained_agent"),
        resume=entry or {"timesteps": 0}, eval_rows=rows,
    )  # fmt: skip


def _write_config(job: Job) -> None:
    cfg = {
        "algo": job.algo, "env": job.env_name, "env_id": job.env_id, "family": job.family, "seed": job.seed,
        "hyperparams": _plain(job.hyperparams),
        "eval": {"freq": job.eval_freq, "episodes": job.eval_episodes, "widths": job.eval_widths},
        "save_freq": job.save_freq, "tensorboard_log": job.tensorboard_log, "trained_agent": job.trained_agent,
        "command": job.command, "versions": versions(),
    }  # fmt: skip
    write_run_config(job.run_dir, cfg)


def _update_total(job: Job) -> None:
    """A resumed run given a new ``-n``: its config.yml records the new total."""
    from usrl.utils import atomic_write_text

    path = job.run_dir / "config.yml"
    cfg = yaml.safe_load(path.read_text())
    if cfg["hyperparams"].get("n_timesteps") != job.n_timesteps:
        cfg["hyperparams"]["n_timesteps"] = job.n_timesteps
        atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))


def _make_envs(job: Job) -> tuple[Any, Any]:
    from usrl.envs import EnvSpec, make_vec_env

    spec = EnvSpec(job.env_id, job.family)
    frame_stack = int(job.hyperparams.get("frame_stack", 4))
    env = make_vec_env(
        spec,
        n_envs=int(job.hyperparams["n_envs"]),
        seed=job.seed,
        monitor_dir=str(job.run_dir),
        frame_stack=frame_stack,
        # a resumed run continues its monitor files (their headers are there)
        monitor_append=job.resume is not None and any(job.run_dir.glob("*monitor.csv")),
    )
    # Atari evaluates full games in ale-py's vector env, one game per env at a time
    n_eval = min(job.eval_episodes, MAX_ATARI_EVAL_ENVS) if spec.family == "atari" else 1
    eval_env = make_vec_env(spec, n_envs=n_eval, seed=job.seed + 10_000, frame_stack=frame_stack, eval_env=True)
    return env, eval_env


def _build_model(job: Job, env: Any) -> Any:
    algo_class = algorithms()[job.algo]
    common: dict[str, Any] = {
        "device": job.device, "tensorboard_log": job.tensorboard_log or str(job.run_dir), "verbose": job.verbose
    }  # fmt: skip
    if job.resume is not None and "model" in job.resume:
        from usrl.runtime import set_rng_state

        ckpt = job.run_dir / "checkpoints"
        model = algo_class.load(ckpt / job.resume["model"], env=env, **common)
        if "replay_buffer" in job.resume:  # saved by off-policy algorithms only
            model.load_replay_buffer(ckpt / job.resume["replay_buffer"])  # type: ignore[attr-defined]
        import torch

        set_rng_state(torch.load(ckpt / job.resume["rng"], weights_only=False))
        return model
    if job.trained_agent:
        kwargs = {k: v for k, v in job.model_kwargs.items() if k != "policy_kwargs"}
        return algo_class.load(job.trained_agent, env=env, seed=job.seed, **common, **kwargs)
    try:
        return algo_class(job.hyperparams["policy"], env, seed=job.seed, **common, **job.model_kwargs)
    except (ValueError, TypeError, KeyError, AssertionError) as exc:
        raise UsageError(f"invalid hyperparameters for {algo_class.__name__}: {exc}") from None


def run(job: Job) -> int:
    """Train, evaluate and save. Returns the exit code."""
    from usrl.callbacks import ResumableCheckpoint, SegmentLog, StopOnSignal, WidthEvalCallback
    from usrl.utils import atomic_write

    fresh = job.resume is None
    if fresh:
        from usrl.utils import next_run_dir

        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        while True:  # runs started at the same moment each take their own number
            try:
                job.run_dir.mkdir()
                break
            except FileExistsError:
                job.run_dir = next_run_dir(job.run_dir.parent.parent, job.algo, job.run_dir.name.rsplit("_", 1)[0])
    created = fresh
    try:
        env, eval_env = _make_envs(job)
        model = _build_model(job, env)
        if fresh:
            _write_config(job)
        else:
            _update_total(job)
    except BaseException:
        if created:
            shutil.rmtree(job.run_dir, ignore_errors=True)
        raise
    high = model.policy.width_range[1]
    stop = StopOnSignal()
    evaluation = WidthEvalCallback(
        eval_env, job.eval_widths, job.eval_freq, job.eval_episodes, job.run_dir, high, job.eval_rows, job.verbose, stop
    )
    segments = SegmentLog(  # before the checkpoint: a checkpoint's segment row is never older than it
        job.run_dir, job.invocation or job.command, evaluation, job.save_freq if job.save_freq > 0 else DEFAULT_RUN_FREQ
    )
    checkpoint = ResumableCheckpoint(job.save_freq, job.run_dir, job.verbose)
    callbacks = [stop, evaluation, segments, checkpoint]
    done = int(job.resume["timesteps"]) if job.resume else 0
    remaining = job.n_timesteps - (model.num_timesteps if job.resume and "model" in job.resume else done)
    if job.verbose:
        where = f"resuming at {model.num_timesteps} steps" if job.resume and "model" in job.resume else "new run"
        print(
            f"usrl.train: {job.algo} on {job.env_id}, {job.n_timesteps} steps, {where}, run folder {job.run_dir}",
            flush=True,
        )
    try:
        if remaining > 0:
            with stop.installed():
                model.learn(
                    remaining, callback=callbacks, tb_log_name=job.algo.upper(), progress_bar=job.progress,
                    reset_num_timesteps=not (job.resume and "model" in job.resume),
                )  # fmt: skip
                if stop.signum is not None:
                    return _stopped(job, stop.signum, checkpoint, segments)
    except FloatingPointError as exc:
        print(
            f"usrl.train: error: training stopped: {exc}; the last good checkpoint in {job.run_dir / 'checkpoints'} is intact",
            file=sys.stderr,
        )
        return 1
    final = final_model_path(job.run_dir, job.env_id)
    atomic_write(final, model.save, suffix=".zip")
    if job.verbose:
        print(f"Saved {final}", flush=True)
    env.close()
    eval_env.close()
    return 0


def _stopped(job: Job, signum: int, checkpoint: Any, segments: Any) -> int:
    """After SIGINT/SIGTERM: a resumable checkpoint within the grace period, one line, 128 + signal."""
    import signal
    import time

    deadline = time.monotonic() + job.grace_period
    skipped = checkpoint.save(deadline=deadline)
    segments.act()
    name = signal.Signals(signum).name
    saved = f"checkpoint saved at {checkpoint.num_timesteps} steps" + (f" ({skipped})" if skipped else "")
    print(f"usrl.train: {name}: {saved}; continue with: python -m usrl.train --resume {job.run_dir}", file=sys.stderr)
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.train``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv

    def body() -> int:
        args = build_parser().parse_args(argv)
        return run(prepare(args, argv))

    return cli_main("usrl.train", body)


if __name__ == "__main__":
    raise SystemExit(main())
