"""Width-vs-return sweep: evaluate one trained agent at every width of a grid.

    python -m usrl.sweep logs/dqn/CartPole-v1_1 --widths 0.25:1.0:0.05 --episodes 20
    python -m usrl.sweep agent.zip --env CartPole-v1 --widths 0.25 0.5 1.0 --compare other/sweep.json

Writes sweep.csv, sweep.json and sweep.png (return +- std against width, and against MMACs)
to --out (default: <run>/sweep), and prints a table. Every width starts from the same seeded
episodes, so differences between widths come from the network alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from usrl.train import final_model_path
from usrl.utils import UsageError, UsageParser, cli_main, parse_widths


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="python -m usrl.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", help="a run folder (logs/dqn/CartPole-v1_1) or a saved model zip")
    p.add_argument(
        "--widths", nargs="+", default=["0.25:1.0:0.05"], help="START:STOP:STEP or a list (default 0.25:1.0:0.05)"
    )
    p.add_argument("--episodes", type=int, default=20, help="episodes per width")
    p.add_argument("--env", help="env (default: the run's; required for a bare zip)")
    p.add_argument("--algo", default=None, help="algorithm of a bare zip (default dqn)")
    p.add_argument(
        "--which", choices=["best", "final"], default="best", help="for a run folder: best_model.zip or the final model"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=4, help="parallel evaluation envs")
    p.add_argument("--out", help="output folder (default: <run>/sweep or <zip stem>_sweep)")
    p.add_argument("--compare", nargs="+", default=[], metavar="SWEEP_JSON", help="other sweeps to overlay on the plot")
    p.add_argument("--label", help="legend label of this sweep")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    return p


def locate_model(path: Path, which: str, default_algo: str = "dqn") -> tuple[Path, str, str | None]:
    """(model zip, algorithm, env name) of a run folder (its ``best_model.zip`` for ``which="best"``
    when there is one, else its final model), or of a bare zip (``default_algo``, no env name)."""
    import yaml

    if path.is_dir():
        cfg_path = path / "config.yml"
        if not cfg_path.is_file():
            raise UsageError(f"{path} is not a run folder (no config.yml)")
        cfg = yaml.safe_load(cfg_path.read_text())
        final = final_model_path(path, cfg["env_id"])
        best = path / "best_model.zip"
        zip_path = best if which == "best" and best.is_file() else final
        if not zip_path.is_file():
            raise UsageError(f"{path} has no saved model yet ({zip_path.name})")
        return zip_path, cfg["algo"], cfg["env"]
    if not path.is_file():
        raise UsageError(f"no such run folder or model zip: {path}")
    return path, default_algo, None


def is_rl_model_path(path: Path) -> bool:
    """Whether ``path`` names an RL run folder (it has a ``config.yml``) or a model zip."""
    return (path.is_dir() and (path / "config.yml").is_file()) or path.suffix == ".zip"


def load_rl_model(zip_path: Path, algo: str, device: str = "cpu") -> Any:
    """The US algorithm ``algo`` (dqn, ppo, a2c) loaded from ``zip_path``; an unknown algorithm or
    a zip that does not load is a one-line ``UsageError``."""
    from usrl.train import algorithms

    algos = algorithms()
    if algo not in algos:
        raise UsageError(f"unknown algorithm {algo!r}; choose from {', '.join(algos)}")
    try:
        return algos[algo].load(zip_path, device=device)
    except Exception as exc:
        raise UsageError(f"cannot load {zip_path}: {type(exc).__name__}: {exc}") from None


def _locate(args: argparse.Namespace) -> tuple[Path, str, str, Path]:
    """(model zip, algo, env name, default out dir)."""
    path = Path(args.model)
    zip_path, algo, env = locate_model(path, args.which, args.algo or "dqn")
    if path.is_dir():
        return zip_path, args.algo or algo, args.env or env, path / "sweep"  # type: ignore[return-value]
    if not args.env:
        raise UsageError("--env is required for a bare model zip")
    return zip_path, algo, args.env, path.parent / f"{path.stem}_sweep"


def _load_compare(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
            if not isinstance(data.get("rows"), list):
                raise ValueError("no rows")
        except (OSError, ValueError) as exc:
            raise UsageError(f"--compare: cannot read sweep {p}: {exc}") from None
        out.append(data)
    return out


def sweep(
    model: Any, env: Any, widths: list[float], episodes: int, seed: int, deterministic: bool = True
) -> list[dict[str, Any]]:
    """Evaluate ``model`` at each width; each width replays the same seeded episodes, on greedy
    actions (``deterministic``) or actions sampled from the policy."""
    from tqdm import tqdm

    from usrl.evaluation import evaluate_at_width
    from usrl.nn import bn_layers, calibrate_bn

    rows = []
    needs_bn = bool(bn_layers(model.policy))
    for w in tqdm(widths, desc="widths", unit="width", leave=False, file=sys.stderr):
        if needs_bn:
            calibrate_bn(model.policy, _observation_batches(model, env, seed), w, forward=_policy_forward)
        env.seed(seed)
        rows.append(evaluate_at_width(model, env, w, episodes, deterministic).as_dict())
    return rows


def _policy_forward(policy: Any, obs: Any) -> Any:
    return policy.predict(obs, deterministic=True)


def _observation_batches(model: Any, env: Any, seed: int, n: int = 20) -> list[np.ndarray]:
    env.seed(seed)
    obs = env.reset()
    batches = []
    for _ in range(n):
        batches.append(obs)
        action, _ = model.predict(obs, deterministic=True)
        obs, *_ = env.step(action)
    return batches


def plot(rows_by_label: dict[str, list[dict[str, Any]]], title: str, path: Path) -> list[str]:
    """Return +- std against width (left) and against MMACs (right), one line per sweep.
    Returns the legend labels drawn."""
    from usrl.plots import Curve, plot_spectrum

    curves = []
    for label, rows in rows_by_label.items():
        mean, std = np.array([r["mean_return"] for r in rows]), np.array([r["std_return"] for r in rows])
        curves.append(
            Curve(label, [r["width"] for r in rows], mean, [r["macs"] for r in rows], (mean - std, mean + std))
        )
    return plot_spectrum(curves, "mean episode return (± std)", title, path, "MMACs per observation")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m usrl.sweep``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main("usrl.sweep", lambda: _run(argv))


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or args.n_envs < 1:
        raise UsageError("--episodes and --n-envs must be >= 1")
    widths = parse_widths(args.widths)
    zip_path, algo, env_name, default_out = _locate(args)
    compare = _load_compare(args.compare)
    from usrl.envs import UnknownEnvError, make_vec_env, resolve_env
    from usrl.train import algorithms

    if algo not in algorithms():
        raise UsageError(f"unknown algorithm {algo!r}; choose from {', '.join(algorithms())}")
    try:
        spec = resolve_env(env_name)
    except UnknownEnvError as exc:
        raise UsageError(str(exc)) from None
    model = load_rl_model(zip_path, algo, args.device)
    low, high = model.policy.width_range
    bad = [w for w in widths if not low <= w <= high]
    if bad:
        raise UsageError(f"--widths: {bad[0]:g} is outside the model's width range [{low:g}, {high:g}]")
    env = make_vec_env(spec, n_envs=args.n_envs, seed=args.seed, eval_env=True)
    if env.observation_space.shape != model.observation_space.shape:
        raise UsageError(
            f"{env_name} observations {env.observation_space.shape} do not fit the model's {model.observation_space.shape}"
        )

    rows = sweep(model, env, widths, args.episodes, args.seed)
    env.close()
    out = Path(args.out) if args.out else default_out
    out.mkdir(parents=True, exist_ok=True)
    label = args.label or (zip_path.parent.name if zip_path.name == "best_model.zip" else zip_path.stem)
    meta = {"label": label, "model": str(zip_path), "algo": algo, "env": spec.env_id, "episodes": args.episodes,
            "seed": args.seed, "n_envs": args.n_envs, "command": "python -m usrl.sweep " + " ".join(argv)}  # fmt: skip
    from usrl.callbacks import EVAL_COLUMNS
    from usrl.utils import atomic_write_text

    cols = [c for c in EVAL_COLUMNS if c != "timesteps"]
    csv_text = ",".join(cols) + "\n" + "".join(",".join(str(r[c]) for c in cols) + "\n" for r in rows)
    atomic_write_text(out / "sweep.csv", csv_text)
    atomic_write_text(out / "sweep.json", json.dumps({**meta, "rows": rows}, indent=1))
    curves = {label: rows, **{c.get("label", f"compare {i}"): c["rows"] for i, c in enumerate(compare)}}
    labels = plot(curves, f"{algo.upper()} on {spec.env_id}: return across widths", out / "sweep.png")

    print(f"{'width':>6} {'MMACs':>8} {'params':>8} {'mean':>9} {'std':>8} {'min':>8} {'max':>8} {'ep len':>8}")
    for r in rows:
        print(f"{r['width']:6.3f} {r['macs'] / 1e6:8.3f} {r['params']:8d} {r['mean_return']:9.2f} {r['std_return']:8.2f} "
              f"{r['min_return']:8.1f} {r['max_return']:8.1f} {r['mean_length']:8.1f}")  # fmt: skip
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'sweep.png'} (curves: {', '.join(labels)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
