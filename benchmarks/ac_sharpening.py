"""Why US-A2C fails SB3's identity tests: the students' distillation sharpens the full width.

US-A2C passes SB3's discrete identity tests far less often than A2C (``sb3_identity.py``), and
its count falls as the students' KL weight rises. This script trains A2C and US-A2C variants on
those tasks (SB3's budgets and settings) and, every few rollouts, measures without changing the
run (random states put back):

- ``H``: the full width's mean policy entropy over a fixed set of 64 observations sampled from
  the observation space;
- ``dH_students`` / ``dH_full``: the first-order change of ``H`` per unit step along the
  descent direction of the students' (other widths') gradient and of the full width's own
  gradient on the rollout just collected (``-g . grad H``, before clipping, the optimizer and
  ``teacher_guard``).

A negative ``dH_students`` means the students' step, through the weights they share with the
full width, makes the full width's policy more deterministic: their KL pulls their output ``S``
toward the full width's ``T = S + R``, which moves ``T`` along ``R``. ``teacher_guard="entropy"``
removes that component (:func:`usrl.nn.backward_guarded`); ``teacher_guard="drift"`` removes the
component that moves the full width's outputs further from the students'. Runs are cached in a
JSON file (rerun resumes), one thread. Results: benchmarks/results/ac_sharpening.md.

    python benchmarks/ac_sharpening.py --seeds 0-9
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ac_gradients import RolloutMeasure  # noqa: E402
from cells import parse_seeds, seeds_label  # noqa: E402
from sb3_identity import CASES, EVAL_EPISODES, THRESHOLD, make_env  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# None: SB3's own A2C; otherwise USA2C's overrides (its defaults elsewhere; its default guard is "drift")
VARIANTS: dict[str, dict[str, Any] | None] = {
    "A2C (SB3)": None,
    "US-A2C, teacher_guard=None": {"teacher_guard": None},
    "US-A2C, distill=None": {"distill": None},
    "US-A2C, teacher_guard=entropy": {"teacher_guard": "entropy"},
    "US-A2C, teacher_guard=drift": {"teacher_guard": "drift"},
}
A2C_CASES = [c for c, (algo, env, _, _) in CASES.items() if algo == "a2c" and env != "IdentityEnvBox"]
MEASURE_EVERY = 20  # rollouts between measurements
PROBES = 64


def _flat(grads: tuple[Any, ...], params: list[Any]) -> Any:
    import torch as th

    return th.cat([(th.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)])


def measure(model: Any, probes: Any) -> dict[str, float]:
    """The full width's entropy on ``probes``, and the first-order entropy change along the
    students' and the full width's descent directions on the current rollout."""
    import torch as th

    from usrl.nn import SandwichLog, width_control

    policy = model.policy
    control = width_control(policy) if hasattr(model, "slimmable") else None
    if control is not None:
        control.width = control.high
    params = [p for p in policy.parameters() if p.requires_grad]
    entropy = policy.get_distribution(probes).entropy().mean()
    row = {"H": float(entropy)}
    if control is None or model.distill is None:
        return row
    grad_h = _flat(th.autograd.grad(entropy, params, allow_unused=True), params)
    np_state, th_state, gen_state = np.random.get_state(), th.get_rng_state(), model.width_generator.get_state()
    data = next(model.rollout_buffer.get(batch_size=None))  # draws a permutation from numpy's generator
    step, _ = model._sandwich_loss(data.observations, model._actions(data), model._own_loss(data, data.advantages),
                                   SandwichLog())  # fmt: skip
    np.random.set_state(np_state)
    th.set_rng_state(th_state)
    model.width_generator.set_state(gen_state)
    control.width = model.rollout_width
    first, students = step.groups
    g_first = _flat(th.autograd.grad(first, params, retain_graph=True, allow_unused=True), params)
    g_students = _flat(th.autograd.grad(students, params, allow_unused=True), params)
    row["dH_students"] = float(-(g_students @ grad_h))
    row["dH_full"] = float(-(g_first @ grad_h))
    return row


def run_one(case: str, overrides: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """Train one case at one seed, measuring every few rollouts; the final mean reward too."""
    import torch as th
    from stable_baselines3 import A2C
    from stable_baselines3.common.evaluation import evaluate_policy

    from usrl import USA2C

    th.set_num_threads(1)
    _, env_name, budget, kwargs = CASES[case]
    env = make_env(env_name)
    model = (A2C if overrides is None else USA2C)("MlpPolicy", env, seed=seed, **kwargs, **(overrides or {}))
    space = copy.deepcopy(env.observation_space)  # the identity envs draw their states from it: leave it alone
    space.seed(0)
    probes, _ = model.policy.obs_to_tensor(np.stack([space.sample() for _ in range(PROBES)]))

    callback = RolloutMeasure(lambda: measure(model, probes), MEASURE_EVERY)
    model.learn(budget, callback=callback)
    reward, _ = evaluate_policy(model, env, n_eval_episodes=EVAL_EPISODES, warn=False)
    return {"rows": callback.rows, "reward": float(reward)}


def summarise(runs: dict[str, Any], case: str, budget: int) -> list[str]:
    """One row per variant: passes, mean reward, the full width's entropy early and late (median
    over seeds), and the students' against the full width's first-order entropy change."""
    lines = []
    for name in VARIANTS:
        keys = sorted(k for k in runs if k.startswith(f"{case}|{name}|"))
        if not keys:
            continue
        rewards = [runs[k]["reward"] for k in keys]
        rows = [r for k in keys for r in runs[k]["rows"]]
        early = [r for r in rows if r["step"] <= budget / 4]
        late = [r for k in keys for r in runs[k]["rows"][-1:]]
        h = f"{np.median([r['H'] for r in early]):.2f} | {np.median([r['H'] for r in late]):.2f}"
        measured = [r for r in early if "dH_students" in r]
        if measured:
            ds = [r["dH_students"] for r in measured]
            df = [r["dH_full"] for r in measured]
            d = f"{np.median(ds):+.3f} | {np.median(df):+.3f} | {np.mean(np.array(ds) < 0):.0%}"
        else:
            d = "- | - | -"
        passes = sum(r >= THRESHOLD for r in rewards)
        lines.append(f"| {case} | {name} | {passes}/{len(keys)} | {np.mean(rewards):.1f} | {h} | {d} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from usrl.utils import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=parse_seeds, default=list(range(10)), help="0-9 or 0,3,5")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    cache = args.out / "ac_sharpening.json"
    runs: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    for case in A2C_CASES:
        for name, overrides in VARIANTS.items():
            for seed in args.seeds:
                key = f"{case}|{name}|{seed}"
                if key not in runs:
                    runs[key] = run_one(case, overrides, seed)
                    print(f"{key}: {runs[key]['reward']:.1f}", flush=True)
                    atomic_write_text(cache, json.dumps(runs, indent=1))
    command = "python benchmarks/ac_sharpening.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = [
        "# US-A2C on SB3's identity tasks: the students' distillation sharpens the full width",
        "",
        f"Command: `{command.strip()}`  ",
        f"Seeds: {seeds_label(args.seeds)} ({len(args.seeds)}); SB3's budgets and settings (`tests/test_identity.py`), "
        f"US-A2C at its defaults except the variant's override; passing: mean reward >= {THRESHOLD:g} over "
        f"{EVAL_EPISODES} episodes. `H`: the full width's mean entropy on {PROBES} fixed observations, median over "
        f"seeds and measurements (every {MEASURE_EVERY} rollouts) in the first quarter of training, and at the last "
        "measurement. `dH`: first-order change of `H` along the students' / the full width's descent direction "
        "(per unit step, before clipping, RMSprop and the guard), median over the first quarter; `dH_s < 0`: how "
        "often the students' step would lower the full width's entropy.",
        "",
        "| case | variant | passes | mean reward | H early | H late | dH students | dH full | dH_s < 0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(line for case in A2C_CASES for line in summarise(runs, case, CASES[case][2])),
        "",
    ]
    atomic_write_text(args.out / "ac_sharpening.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
