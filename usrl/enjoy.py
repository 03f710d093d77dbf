"""Watch a trained agent at a width: play full episodes headless, print the returns, optionally
record a video (rl-zoo3's ``enjoy``).

    python -m usrl.enjoy logs/dqn/Pong_1 --width 0.5 --episodes 3
    python -m usrl.enjoy logs/ppo/CartPole-v1_1 --width 0.25 --episodes 1 --record cartpole.gif
    python -m usrl.enjoy pong_us_dqn.zip --env Pong --width 1.0 --record pong.mp4

Actions are deterministic unless ``--stochastic``. Atari games are played in evaluation mode
(full games, raw scores). ``--record`` writes the frames of the first episode: ``.gif`` or
``.mp4``; the ``video`` extra (``pip install -e ".[video]"``) brings imageio-ffmpeg for .mp4
and pygame for classic-control rendering. Recording Atari uses rl-zoo3's env pipeline, which
renders frames (ale-py's vector env does not).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from usrl.utils import UsageError, UsageParser, atomic_write, cli_main, resolve_device

VIDEO_FORMATS = (".gif", ".mp4")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m usrl.enjoy``."""
    p = UsageParser(prog="python -m usrl.enjoy", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model", help="a run folder (logs/dqn/Pong_1) or a model zip (with --env)")
    p.add_argument("--env", help="env (default: the run's)")
    p.add_argument("--algo", help="algorithm of a bare model zip (default dqn)")
    p.add_argument("--which", choices=["final", "best"], default="final")
    p.add_argument("--width", type=float, default=None, help="width to act at (default: the top of the range)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record", help="video file to write: .gif or .mp4")
    p.add_argument("--fps", type=int, default=30, help="video frame rate")
    p.add_argument("--max-steps", type=int, default=100_000, help="stop after this many steps in all")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("episodes", "fps", "max_steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.record is not None:
        suffix = Path(args.record).suffix
        if suffix not in VIDEO_FORMATS:
            raise UsageError(f"--record: unknown video format {suffix or '(none)'}; use .gif or .mp4")
        if suffix == ".mp4":
            try:
                import imageio_ffmpeg  # noqa: F401
            except ImportError:
                raise UsageError(
                    '--record .mp4 needs imageio-ffmpeg: pip install -e ".[video]" (or use .gif)'
                ) from None


def _write_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    import imageio.v2 as imageio

    images: list[npt.ArrayLike] = list(frames)

    def write(tmp: Path) -> None:
        if path.suffix == ".gif":
            imageio.mimsave(tmp, images, format="GIF", duration=1000 / fps, loop=0)
        else:
            imageio.mimsave(tmp, images, format="FFMPEG", fps=fps, macro_block_size=1)

    atomic_write(path, write, suffix=path.suffix)


def play(model: Any, env: Any, episodes: int, deterministic: bool, max_steps: int,
         frames: list[np.ndarray] | None = None) -> list[tuple[float, int]]:  # fmt: skip
    """(return, length) of up to ``episodes`` full episodes of ``model`` on the vec env ``env``
    (episode statistics from its Monitor ``info["episode"]``), appending the first env's frames
    to ``frames`` while its first episode lasts when given."""
    obs = env.reset()
    results: list[tuple[float, int]] = []
    recording = frames is not None
    if recording:
        frames.append(env.render())  # type: ignore[union-attr]
    for _ in range(max_steps):
        actions, _ = model.predict(obs, deterministic=deterministic)
        obs, _, dones, infos = env.step(actions)
        for i, (done, info) in enumerate(zip(dones, infos, strict=True)):
            if "episode" in info and len(results) < episodes:
                results.append((float(info["episode"]["r"]), int(info["episode"]["l"])))
                print(f"episode {len(results)}: return {results[-1][0]:+g}, {results[-1][1]} steps", flush=True)
            if i == 0 and done and "episode" in info:
                recording = False
        if recording:
            frames.append(env.render())  # type: ignore[union-attr]
        if len(results) >= episodes:
            break
    return results


def run(args: argparse.Namespace) -> int:
    """Play, report, record; returns the exit code."""
    _check(args)
    from usrl.envs import UnknownEnvError, make_vec_env, resolve_env
    from usrl.sweep import load_rl_model, locate_model

    zip_path, algo, env_name = locate_model(Path(args.model), args.which, args.algo or "dqn")
    env_name = args.env or env_name
    if env_name is None:
        raise UsageError("--env is required for a bare model zip")
    try:
        spec = resolve_env(env_name)
    except UnknownEnvError as exc:
        raise UsageError(str(exc)) from None
    model = load_rl_model(zip_path, algo, resolve_device(args.device))
    low, high = model.policy.width_range
    width = high if args.width is None else args.width
    if not low <= width <= high:
        raise UsageError(f"--width {width:g} is outside the model's width range [{low:g}, {high:g}]")
    model.set_width(width)
    record = args.record is not None
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless rendering, no display or audio
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    backend = "zoo" if record and spec.family == "atari" else "ale"
    env = make_vec_env(spec, n_envs=1, seed=args.seed, eval_env=True, atari_backend=backend, render=record)
    if env.observation_space.shape != model.observation_space.shape:
        raise UsageError(f"{env_name} observations {env.observation_space.shape} do not fit the model's "
                         f"{model.observation_space.shape}")  # fmt: skip
    frames: list[np.ndarray] | None = [] if record else None
    from gymnasium.error import DependencyNotInstalled

    try:
        results = play(model, env, args.episodes, not args.stochastic, args.max_steps, frames)
    except DependencyNotInstalled as exc:
        raise UsageError(f'--record: {exc} (or pip install -e ".[video]")') from None
    env.close()
    returns = [r for r, _ in results]
    if returns:
        print(f"{spec.env_id} at width {width:g}: mean return {np.mean(returns):+.2f} ± {np.std(returns):.2f} over "
              f"{len(returns)} episode(s)")  # fmt: skip
    else:
        print(f"no episode ended within --max-steps {args.max_steps}")
    if frames:
        _write_video(frames, Path(args.record), args.fps)
        print(f"wrote {args.record} ({len(frames)} frames)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.enjoy``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.enjoy", lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
