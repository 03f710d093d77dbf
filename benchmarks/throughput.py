"""Training throughput: US-DQN (sandwich n=4 + distillation) against SB3's plain DQN on Pong.

Both agents use the zoo's Atari DQN settings (buffer 100k with SB3's memory optimisation,
batch 32, train_freq 4, target update 1000, lr 1e-4), fill the buffer with the same number
of warm-up steps, then are timed over the same number of training steps. Runs alternate
between the two agents; the median env-steps/s of each and their ratio are reported, plus
one update of each agent against its arithmetic floor (one full-width forward + backward),
measured turn by turn: SB3 DQN, US-DQN (n=4) and US-DQN with n_widths=1.

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import ale_py
import gymnasium as gym
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack

from usrl import USDQN
from usrl.nn import share_stem, width_control
from usrl.utils import atomic_write_text

gym.register_envs(ale_py)

ZOO_ATARI = dict(
    buffer_size=100_000,
    batch_size=32,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=1000,
    learning_rate=1e-4,
    exploration_fraction=0.1,
    exploration_final_eps=0.01,
    optimize_memory_usage=True,
    replay_buffer_kwargs={"handle_timeout_termination": False},
)


def make_env(seed: int) -> VecFrameStack:
    return VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=seed), n_stack=4)


def build(kind: str, warmup: int, seed: int) -> DQN:
    if kind == "sb3":
        return DQN("CnnPolicy", make_env(seed), learning_starts=warmup, seed=seed, device="cpu", **ZOO_ATARI)
    return USDQN(
        "CnnPolicy",
        make_env(seed),
        learning_starts=warmup,
        seed=seed,
        device="cpu",
        n_widths=4,
        distill="mse",
        **ZOO_ATARI,
    )


def timed_run(kind: str, warmup: int, steps: int, seed: int) -> tuple[float, DQN]:
    """Warm up (fill the buffer, no updates), then time ``steps`` training steps. Returns steps/s."""
    model = build(kind, warmup, seed)
    model.learn(warmup)
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t0), model


def widths_fwd_bwd(model: DQN, obs: torch.Tensor) -> None:
    """The forward+backward of one update's widths on ``obs`` (the full width alone for SB3's DQN):
    the arithmetic of an update without its target network, losses or optimizer."""
    q_net = model.policy.q_net
    forward = lambda: q_net.q_net(q_net.features_extractor(obs)).sum()  # noqa: E731
    if not isinstance(model, USDQN):
        forward().backward()
        return
    control = width_control(model.policy)
    total = torch.zeros(())
    with share_stem(q_net):
        for w in model._step_widths(control.low, control.high):
            control.width = w
            total = total + forward()
    control.width = control.high
    total.backward()


def update_breakdown(models: dict[str, DQN], repeats: int) -> dict[str, dict[str, float]]:
    """Per model, the median ms of one ``train(1)`` call, of one full-width forward+backward on a
    batch of 32, and of the forward+backward of all its widths. The models take turns call by
    call, so drifts in machine speed hit them alike."""
    for model in models.values():
        model._setup_learn(1, reset_num_timesteps=False)
    times: dict[str, dict[str, list[float]]] = {k: {"update_ms": [], "fwd_bwd_ms": [], "widths_ms": []} for k in models}
    for _ in range(repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            model.train(gradient_steps=1, batch_size=32)
            times[name]["update_ms"].append(time.perf_counter() - t0)
    for _ in range(repeats):
        for name, model in models.items():
            obs = model.replay_buffer.sample(32).observations.float() / 255.0
            q_net = model.policy.q_net
            t0 = time.perf_counter()
            q_net.q_net(q_net.features_extractor(obs)).sum().backward()
            times[name]["fwd_bwd_ms"].append(time.perf_counter() - t0)
            model.policy.optimizer.zero_grad()
            t0 = time.perf_counter()
            widths_fwd_bwd(model, obs)
            times[name]["widths_ms"].append(time.perf_counter() - t0)
            model.policy.optimizer.zero_grad()
    return {k: {m: statistics.median(v) * 1e3 for m, v in t.items()} for k, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=1000, help="steps that fill the buffer before timing")
    p.add_argument("--steps", type=int, default=2000, help="timed training steps per run")
    p.add_argument("--runs", type=int, default=3, help="runs per agent (alternating)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput.md")
    args = p.parse_args(argv)

    rates: dict[str, list[float]] = {"sb3": [], "us": []}
    models: dict[str, DQN] = {}
    for r in range(args.runs):
        for kind in ("sb3", "us") if r % 2 == 0 else ("us", "sb3"):
            rate, models[kind] = timed_run(kind, args.warmup, args.steps, args.seed + r)
            rates[kind].append(rate)
            print(f"run {r} {kind:>3}: {rate:6.1f} env-steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["sb3"] / med["us"]  # wall time per env step, US / SB3
    us_full = USDQN("CnnPolicy", make_env(0), learning_starts=0, n_widths=1, device="cpu", **ZOO_ATARI)
    us_full.learn(200)
    breakdown = update_breakdown({"sb3": models["sb3"], "us": models["us"], "us_n1": us_full}, 50)

    cmd = "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Training throughput: US-DQN vs SB3 DQN on PongNoFrameskip-v4 (CPU)",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}  ",
        f"Protocol: zoo Atari DQN settings ({', '.join(f'{k}={v}' for k, v in ZOO_ATARI.items() if k != 'replay_buffer_kwargs')}); "
        f"{args.warmup} warm-up steps fill the buffer, then {args.steps} timed training steps; "
        f"{args.runs} runs per agent, alternating; seeds {args.seed}..{args.seed + args.runs - 1}.  ",
        "US-DQN: n_widths=4 (sandwich), distill='mse' (the Atari preset's), width range 0.25-1.0.",
        "",
        "| agent | env-steps/s per run | median |",
        "|---|---|---:|",
        f"| SB3 DQN (CnnPolicy) | {', '.join(f'{x:.1f}' for x in rates['sb3'])} | {med['sb3']:.1f} |",
        f"| US-DQN (USCnnPolicy) | {', '.join(f'{x:.1f}' for x in rates['us'])} | {med['us']:.1f} |",
        "",
        f"Wall time per env step, US-DQN / SB3 DQN: **{ratio:.2f}** (target <= 1.00: {'met' if ratio <= 1.0 else 'missed'}).",
        "",
        "## One update (median of 50, ms)",
        "",
        "| agent | train(1) | full-width forward+backward alone (floor) | train / floor "
        "| forward+backward of the update's widths |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {b['update_ms']:.1f} | {b['fwd_bwd_ms']:.1f} | {b['update_ms'] / b['fwd_bwd_ms']:.2f} "
            f"| {b['widths_ms']:.1f} |"
            for name, b in (
                ("SB3 DQN", breakdown["sb3"]),
                ("US-DQN n_widths=4", breakdown["us"]),
                ("US-DQN n_widths=1", breakdown["us_n1"]),
            )
        ),
        "",
        f"The forward+backward of US-DQN's four widths alone (no target network, losses, sampling or "
        f"optimizer) takes {breakdown['us']['widths_ms'] / breakdown['sb3']['update_ms']:.2f}x SB3 DQN's "
        f"whole update, and US-DQN's update {breakdown['us']['update_ms'] / breakdown['sb3']['update_ms']:.2f}x.",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
