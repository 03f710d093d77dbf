"""Where US-PPO's update goes: the full width's own gradient against the other widths'.

US-PPO learned more slowly than plain PPO on CartPole (the actor-critic method issue). This
script measures why, on the training runs themselves: every few rollouts it takes one
minibatch of the fresh rollout (as PPO's first minibatch would be, with PPO's advantage
normalisation) and computes two gradients of it, without changing the run (the random states
are put back):

- ``g_full``: the full width's own PPO loss alone (what plain PPO would follow);
- ``g_total``: the sandwich loss the run actually follows (full width + the other widths);

so that ``g_students = g_total - g_full``. Per parameter group (actor: policy MLP, action head
and log_std; critic: value MLP and value head) it reports the students' gradient norm relative
to the full width's (``|g_s| / |g_f|``) and their cosine, and for the whole policy the factor
by which the global gradient clip (``max_grad_norm``) scales the full width's gradient, relative
to the factor plain PPO would get (``clip ratio``: 1 means no extra shrinking). Under Adam a
students' gradient much larger than the full width's and not aligned with it takes over the
second-moment estimate, so the full width's own step shrinks by about ``1 / sqrt(1 + r^2)``.

Variants are -params overrides of the task's preset; runs are cached in a JSON file (rerun
resumes), one thread each. Results: benchmarks/results/ac_gradients.md.

    python benchmarks/ac_gradients.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

RESULTS = Path(__file__).resolve().parent / "results"
# every variant spells out what it tests, so that changing a default does not change a variant
VARIANTS: dict[str, dict[str, Any]] = {
    "slimmable critic (US-Nets)": {"policy_kwargs.slim_critic": True, "student_weight": 1.0, "grad_clip": "joint"},
    "slimmable critic, student_weight 1/3": {
        "policy_kwargs.slim_critic": True,
        "student_weight": 0.3333,
        "grad_clip": "joint",
    },
    "full-width critic": {"policy_kwargs.slim_critic": False, "student_weight": 1.0, "grad_clip": "joint"},
    "full-width critic, student_weight 1/3": {
        "policy_kwargs.slim_critic": False,
        "student_weight": 0.3333,
        "grad_clip": "joint",
    },
    "no distillation, slimmable critic": {
        "distill": None,
        "policy_kwargs.slim_critic": True,
        "student_weight": 1.0,
        "grad_clip": "joint",
    },
}
MEASURE_EVERY = 5  # rollouts between measurements
GROUPS = ("actor", "critic")


def parameter_groups(policy: Any) -> dict[str, list[Any]]:
    """The policy's parameters split into actor and critic (a shared extractor would be neither)."""
    actor = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    if hasattr(policy, "log_std"):
        actor.append(policy.log_std)
    critic = [*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters()]
    return {"actor": actor, "critic": critic}


def measure(model: Any) -> dict[str, float]:
    """Decompose the sandwich gradient of one minibatch of the current rollout (state restored)."""
    import torch as th

    from usrl.nn import SandwichLog

    np_state, th_state = np.random.get_state(), th.get_rng_state()
    gen_state = model.width_generator.get_state()
    data = next(model.rollout_buffer.get(model.batch_size))
    np.random.set_state(np_state)
    adv = (data.advantages - data.advantages.mean()) / (data.advantages.std() + 1e-8)
    clip_range = model.clip_range(model._current_progress_remaining)
    own = model._own_loss(data, adv, clip_range, None)
    groups = parameter_groups(model.policy)
    params = [p for ps in groups.values() for p in ps]

    def gradient(n_widths: int) -> list[th.Tensor]:
        saved = model.n_widths
        model.n_widths = n_widths
        try:
            step, _ = model._sandwich_loss(data.observations, model._actions(data), own, SandwichLog())
        finally:
            model.n_widths = saved
            model.width_generator.set_state(gen_state)
        grads = th.autograd.grad(step.total, params, allow_unused=True)
        return [th.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    g_total, g_full = gradient(model.n_widths), gradient(1)
    th.set_rng_state(th_state)
    out: dict[str, float] = {}
    i = 0
    for name, ps in groups.items():
        f = th.cat([g.flatten() for g in g_full[i : i + len(ps)]])
        t = th.cat([g.flatten() for g in g_total[i : i + len(ps)]])
        i += len(ps)
        s = t - f
        out[f"{name}_ratio"] = float(s.norm() / f.norm().clamp_min(1e-12))
        out[f"{name}_cos"] = float(th.dot(s, f) / (s.norm() * f.norm()).clamp_min(1e-12))
    norm_total = float(th.cat([g.flatten() for g in g_total]).norm())
    norm_full = float(th.cat([g.flatten() for g in g_full]).norm())
    clip = lambda n: min(1.0, model.max_grad_norm / max(n, 1e-12))  # noqa: E731
    # clipped apart (grad_clip="apart"), the full width's gradient gets plain PPO's factor by construction
    out["clip_ratio"] = 1.0 if model.grad_clip == "apart" else clip(norm_total) / clip(norm_full)
    return out


class RolloutMeasure(BaseCallback):
    """Calls ``measure()`` after the 1st rollout and every ``every``-th after it, keeping
    ``{"step": env steps so far, **measure()}`` in ``rows``."""

    def __init__(self, measure: Callable[[], dict[str, float]], every: int) -> None:
        super().__init__()
        self.measure, self.every = measure, every
        self.rows: list[dict[str, float]] = []
        self.rollouts = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        if self.rollouts % self.every == 1:
            self.rows.append({"step": self.num_timesteps, **self.measure()})


def run_one(task: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one US-PPO cell of ``task`` with ``overrides``, measuring every few rollouts."""
    import torch as th

    from usrl import USPPO
    from usrl.envs import make_vec_env, resolve_env
    from usrl.evaluation import evaluate_at_width
    from usrl.hyperparams import to_model_kwargs

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from width_vs_return import TASKS, task_hyperparams

    th.set_num_threads(1)
    cfg = TASKS[task]
    spec = resolve_env(cfg["env"])
    hp = task_hyperparams(task, "ppo", overrides)
    env = make_vec_env(spec, n_envs=int(hp.get("n_envs", 1)), seed=seed)
    model = USPPO(hp.get("policy", "MlpPolicy"), env, seed=seed, device="cpu", **to_model_kwargs(hp))

    callback = RolloutMeasure(lambda: measure(model), MEASURE_EVERY)
    t0 = time.perf_counter()
    model.learn(cfg["steps"], callback=callback)
    seconds = time.perf_counter() - t0
    eval_env = make_vec_env(spec, n_envs=1, seed=10_000 + seed, eval_env=True)
    returns = {str(w): evaluate_at_width(model, eval_env, w, 20).mean_return for w in (0.25, 1.0)}
    return {"rows": callback.rows, "train_s": seconds, "returns": returns}


def summarise(runs: dict[str, dict[str, Any]], steps: int) -> list[str]:
    """Two table rows per variant: medians over seeds and measurements, by half of training."""
    lines = [
        "| variant | seeds | half | actor |g_s|/|g_f| | actor cos | critic |g_s|/|g_f| | critic cos | clip ratio "
        "| return w=0.25 / 1.0 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in VARIANTS:
        seeds = sorted(k for k in runs if k.startswith(f"{name}|"))
        if not seeds:
            continue
        rets = [(runs[k]["returns"]["0.25"], runs[k]["returns"]["1.0"]) for k in seeds]
        ret = f"{np.mean([r[0] for r in rets]):.0f} / {np.mean([r[1] for r in rets]):.0f}"
        for half, (lo, hi) in (("first", (0, steps / 2)), ("second", (steps / 2, steps + 1))):
            rows = [r for k in seeds for r in runs[k]["rows"] if lo <= r["step"] < hi]
            mean = lambda key, rows=rows: np.median([r[key] for r in rows])  # noqa: E731
            cells = [f"{mean(f'{g}_ratio'):.2f}" + f" | {mean(f'{g}_cos'):+.2f}" for g in GROUPS]
            lines.append(
                f"| {name} | {len(seeds)} | {half} | {cells[0]} | {cells[1]} | {mean('clip_ratio'):.2f} | "
                + (ret if half == "first" else "")
                + " |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cartpole", choices=("cartpole", "acrobot", "pendulum"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from width_vs_return import TASKS

    from usrl.utils import atomic_write_text

    cache = args.out / f"ac_gradients_{args.task}.json"
    runs: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    for name in args.variants:
        for seed in args.seeds:
            key = f"{name}|{seed}"
            if key in runs:
                continue
            print(f"{name}, seed {seed} ...", flush=True)
            runs[key] = run_one(args.task, VARIANTS[name], seed)
            r = runs[key]
            print(f"  {r['train_s']:.0f} s, return {r['returns']}", flush=True)
            atomic_write_text(cache, json.dumps(runs, indent=1))
    steps = TASKS[args.task]["steps"]
    command = "python benchmarks/ac_gradients.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = [
        f"# US-PPO gradients on {args.task}: the full width's own against the other widths'",
        "",
        f"Command: `{command.strip()}`  ",
        f"{steps} env steps per run at the task's PPO preset with each variant's overrides; every "
        f"{MEASURE_EVERY}th rollout, PPO's first minibatch of it (see the script's docstring). Over seeds "
        "and measurements in each half of training (the median: single measurements vary widely). Returns: final weights, 20 greedy episodes, mean over seeds.",
        "",
        *summarise(runs, steps),
        "",
        "Variants (overrides of the preset): " + "; ".join(f"{k}: `{v}`" for k, v in VARIANTS.items()),
        "",
    ]
    atomic_write_text(args.out / f"ac_gradients_{args.task}.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
