"""Training throughput on Pong at the main job's recipe: US-DQN against SB3's plain DQN.

Both agents train with the PongNoFrameskip-v4 preset of usrl/hyperparams/dqn.yml (ale-py's vector
env with 10 games, 3-step returns from the frame-level replay buffer, one gradient step per 10 env
steps, batch 32); SB3's DQN gets the same env and buffer. After a warm-up that fills the buffer,
each run times a stretch of training (no evaluations); runs alternate between the agents. Then
one update of each agent is timed against its arithmetic floor: the forward+backward of its
widths plus the target network's forward on the same batch, timed alone (sampling, TD targets'
bookkeeping, losses, optimizer, clipping and logging are the overhead). The agents take turns
update by update, so drifts in machine speed hit them alike.

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.md
    python benchmarks/throughput.py --device cuda --out benchmarks/results/throughput_cuda.md
"""

from __future__ import annotations

import argparse
import inspect
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import DQN

from usrl import USDQN
from usrl.deploy.latency import device_name
from usrl.envs import make_vec_env
from usrl.hyperparams import shipped_presets, to_model_kwargs
from usrl.nn import share_stem, width_control
from usrl.utils import UsageError, atomic_write_text, resolve_device

ENV_ID = "PongNoFrameskip-v4"
# the preset's arguments that SB3's DQN does not take (the sandwich's and distillation's)
US_ONLY = set(inspect.signature(USDQN.__init__).parameters) - set(inspect.signature(DQN.__init__).parameters)
TARGET_FLOOR_RATIO, TARGET_ENV_STEPS = 1.15, 220.0


def recipe() -> tuple[dict[str, Any], int]:
    """The Pong preset as constructor arguments, and its number of envs."""
    hp = shipped_presets("dqn")[ENV_ID]
    kwargs = to_model_kwargs(hp)
    return kwargs, int(hp["n_envs"])


def build(kind: str, warmup: int, seed: int, device: str) -> DQN:
    kwargs, n_envs = recipe()
    kwargs = {**kwargs, "learning_starts": warmup}
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    if kind == "sb3":
        plain = {k: v for k, v in kwargs.items() if k not in US_ONLY and k != "policy_kwargs"}
        # SB3 hands n-step settings to its own buffer only; the frame buffer gets them explicitly
        plain["replay_buffer_kwargs"] = {"n_steps": plain.pop("n_steps"), "gamma": plain.get("gamma", 0.99)}
        return DQN("CnnPolicy", env, seed=seed, device=device, **plain)
    return USDQN("CnnPolicy", env, seed=seed, device=device, **kwargs)


def _sync(model: DQN) -> None:
    """Wait for the model's device: CUDA kernels run asynchronously, so a timer needs this."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def timed_run(kind: str, warmup: int, steps: int, seed: int, device: str) -> tuple[float, DQN]:
    """Fill the buffer (no updates), then time ``steps`` training env steps. Returns env-steps/s."""
    model = build(kind, warmup, seed, device)
    model.learn(warmup)
    _sync(model)
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    _sync(model)
    return steps / (time.perf_counter() - t0), model


def floor(model: DQN, obs: torch.Tensor, next_obs: torch.Tensor) -> None:
    """An update's arithmetic alone: the target network's forward on ``next_obs`` and the
    forward+backward of the update's widths on ``obs`` (the full width alone for SB3's DQN)."""
    q_net, q_target = model.policy.q_net, model.policy.q_net_target
    forward = lambda: q_net.q_net(q_net.features_extractor(obs)).sum()  # noqa: E731
    if not isinstance(model, USDQN):
        with torch.no_grad():
            q_target(next_obs)
        forward().backward()
        return
    control = width_control(model.policy)
    control.width = control.high
    with torch.no_grad():
        q_target(next_obs)
    total = torch.zeros((), device=obs.device)
    with share_stem(q_net):
        for w in model._step_widths(control.low, control.high):
            control.width = w
            total = total + forward()
    control.width = control.high
    total.backward()


def update_breakdown(models: dict[str, DQN], repeats: int) -> dict[str, dict[str, float]]:
    """Per model, the median ms of one ``train(1)`` call and of its arithmetic floor, taken in turns."""
    for model in models.values():
        model._setup_learn(1, reset_num_timesteps=False)
    times: dict[str, dict[str, list[float]]] = {k: {"update_ms": [], "floor_ms": []} for k in models}
    for _ in range(repeats):
        for name, model in models.items():
            _sync(model)
            t0 = time.perf_counter()
            model.train(gradient_steps=1, batch_size=32)
            _sync(model)
            times[name]["update_ms"].append(time.perf_counter() - t0)
            data = model.replay_buffer.sample(32)
            obs, next_obs = data.observations.float() / 255.0, data.next_observations.float() / 255.0
            _sync(model)
            t0 = time.perf_counter()
            floor(model, obs, next_obs)
            _sync(model)
            times[name]["floor_ms"].append(time.perf_counter() - t0)
            model.policy.optimizer.zero_grad()
    return {k: {m: statistics.median(v) * 1e3 for m, v in t.items()} for k, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=2000, help="env steps that fill the buffer before timing")
    p.add_argument("--steps", type=int, default=4000, help="timed training env steps per run")
    p.add_argument("--runs", type=int, default=3, help="runs per agent (alternating)")
    p.add_argument("--repeats", type=int, default=60, help="updates timed per agent for the breakdown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the networks train")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput.md")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except UsageError as e:
        p.error(str(e))

    rates: dict[str, list[float]] = {"sb3": [], "us": []}
    models: dict[str, DQN] = {}
    for r in range(args.runs):
        for kind in ("sb3", "us") if r % 2 == 0 else ("us", "sb3"):
            rate, models[kind] = timed_run(kind, args.warmup, args.steps, args.seed + r, device)
            rates[kind].append(rate)
            print(f"run {r} {kind:>3}: {rate:6.1f} env-steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    breakdown = update_breakdown(models, args.repeats)
    kwargs, n_envs = recipe()
    per_vec_step = {k: 1e3 * n_envs / med[k] for k in med}  # ms per step of the 10 games (one update each)

    cmd = "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    us, sb3 = breakdown["us"], breakdown["sb3"]
    us_ratio = us["update_ms"] / us["floor_ms"]
    lines = [
        f"# Training throughput on {ENV_ID} at the main job's recipe ({device_name(device)})",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}  ",
        f"Recipe: the {ENV_ID} preset ({n_envs} games in ale-py's vector env, "
        + ", ".join(
            f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items() if k not in US_ONLY | {"policy_kwargs"}
        )
        + f"); SB3's DQN gets the same env and buffer. {args.warmup} warm-up env steps fill the buffer, then "
        f"{args.steps} timed training env steps (no evaluations); {args.runs} runs per agent, alternating; seeds "
        f"{args.seed}..{args.seed + args.runs - 1}. US-DQN: n_widths={kwargs['n_widths']} (sandwich), "
        f"distill={kwargs['distill']!r}, widths {kwargs['policy_kwargs']['width_range']}.",
        "",
        "| agent | env-steps/s per run | median | ms per step of the games (one update) |",
        "|---|---|---:|---:|",
        f"| SB3 DQN | {', '.join(f'{x:.1f}' for x in rates['sb3'])} | {med['sb3']:.1f} | {per_vec_step['sb3']:.1f} |",
        f"| US-DQN | {', '.join(f'{x:.1f}' for x in rates['us'])} | {med['us']:.1f} | {per_vec_step['us']:.1f} |",
        "",
        f"US-DQN trains at **{med['us']:.1f} env-steps/s** (target >= {TARGET_ENV_STEPS:g}: "
        f"{'met' if med['us'] >= TARGET_ENV_STEPS else 'missed'}); wall time per env step US/SB3: "
        f"{med['sb3'] / med['us']:.2f}.",
        "",
        f"## One update against its arithmetic floor (median of {args.repeats}, ms)",
        "",
        "| agent | train(1) | floor: target forward + forward/backward of its widths | update / floor "
        "| rest of a step of the games (acting, env, buffer, SB3 loop) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {b['update_ms']:.1f} | {b['floor_ms']:.1f} | {b['update_ms'] / b['floor_ms']:.2f} "
            f"| {per_vec_step[k] - b['update_ms']:.1f} |"
            for name, k, b in (("SB3 DQN", "sb3", sb3), ("US-DQN", "us", us))
        ),
        "",
        f"US-DQN's update is {us_ratio:.2f}x its floor (target <= {TARGET_FLOOR_RATIO:.2f}: "
        f"{'met' if us_ratio <= TARGET_FLOOR_RATIO else 'missed'}).",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
