"""The evidence for the main job: one US-DQN trained on Pong, swept across widths.

Given a finished `python -m usrl.train --algo dqn --env Pong` run folder, writes to --out
(default benchmarks/results/pong/):
  * learning_curves.csv / .png  the run's periodic evaluations (return per width vs env steps)
  * sweep.csv / .json / .png    `python -m usrl.sweep` of the final model: 0.25:1.0:0.05, 20 full
                                games per width (return vs width and vs MMACs)
  * zoo_pipeline.csv            the final model also played on rl-zoo3's env pipeline (SB3's
                                AtariWrapper + VecFrameStack) it was not trained on
  * segments.csv                wall time and env steps of each training segment
  * pong_us_dqn.zip             the trained model for acting (float16 Q-network, USDQN.load-able)
  * README.md                   the report: commands, cost, the goal's verdict per width

    python benchmarks/pong_report.py logs/dqn/Pong_1 [--control logs/dqn/Pong_2] [--note note.md]

--control adds the periodic evaluations of a comparison run on the same recipe (e.g. the same
preset with --n-widths 1) to the learning curves and a table; --note adds a markdown file's text
(what the numbers need said: a hand-recorded segment, a known interruption) to the report.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

RESULTS = Path(__file__).parent / "results" / "pong"
GOAL_SCORE, GOAL_WIDTHS = 18.0, (0.25, 0.5, 0.75, 1.0)
SWEEP_ARGS = ["--which", "final", "--widths", "0.25:1.0:0.05", "--episodes", "20", "--n-envs", "20", "--seed", "0"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_learning_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Mean evaluation return (± std over the evaluation games) against env steps, one line per width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for w in sorted({r["width"] for r in rows}):
        pts = sorted((r["timesteps"], r["mean_return"], r["std_return"]) for r in rows if r["width"] == w)
        t, m, s = (np.array(x) for x in zip(*pts, strict=True))
        (line,) = ax.plot(t / 1e6, m, marker="o", ms=3, label=f"width {w:g}")
        ax.fill_between(t / 1e6, m - s, m + s, color=line.get_color(), alpha=0.12)
    ax.axhline(GOAL_SCORE, color="grey", ls="--", lw=1, label=f"goal {GOAL_SCORE:+g}")
    ax.set_xlabel("env steps (millions)")
    ax.set_ylabel("evaluation return (full games)")
    ax.set_ylim(-22, 22)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def zoo_pipeline_check(zip_path: Path, widths: tuple[float, ...], games: int, seed: int) -> list[dict[str, Any]]:
    """Play the model on rl-zoo3's pipeline (SB3 wrappers, one Python env per game) and on ours."""
    from usrl import USDQN
    from usrl.envs import make_vec_env
    from usrl.evaluation import evaluate_at_width

    model = USDQN.load(zip_path, device="cpu")
    out = []
    for backend in ("ale", "zoo"):
        env = make_vec_env("Pong", n_envs=games, seed=seed, eval_env=True, atari_backend=backend)
        for w in widths:
            env.seed(seed)
            res = evaluate_at_width(model, env, w, games)
            out.append({"pipeline": backend, "width": w, "mean_return": res.mean_return, "std_return": res.std_return,
                        "min_return": res.min_return, "n_games": res.n_episodes})  # fmt: skip
            print(f"{backend} pipeline, width {w}: {res.mean_return:+.2f} ± {res.std_return:.2f}", flush=True)
        env.close()
    return out


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---:" for _ in cols) + "|"
    body = ["| " + " | ".join(format(r[c[0]], c[2]) for c in cols) + " |" for r in rows]
    return [head, sep, *body]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the run folder of python -m usrl.train --algo dqn --env Pong")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--zoo-games", type=int, default=20, help="games per width on the zoo pipeline (0: skip)")
    p.add_argument("--control", type=Path, help="run folder of a comparison run on the same recipe")
    p.add_argument("--note", type=Path, help="markdown file whose text goes into the report")
    p.add_argument("--reuse", action="store_true",
                   help="reuse the sweep and zoo-pipeline results already in --out (rewrite the report only)")  # fmt: skip
    args = p.parse_args(argv)
    from usrl import USDQN
    from usrl.callbacks import read_evaluations, read_segments
    from usrl.sweep import main as sweep_main
    from usrl.train import final_model_path

    cfg = yaml.safe_load((args.run / "config.yml").read_text())
    final = final_model_path(args.run, cfg["env_id"])
    if not final.is_file():
        sys.exit(f"pong_report: {args.run} has no final model yet")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    evals = read_evaluations(args.run / "evaluations.csv")
    shutil.copy(args.run / "evaluations.csv", out / "learning_curves.csv")
    plot_learning_curves(
        evals,
        out / "learning_curves.png",
        f"US-DQN on {cfg['env_id']}, seed {cfg['seed']}: evaluations during training",
    )
    control_rows: list[dict[str, Any]] = []
    control_cfg: dict[str, Any] = {}
    if args.control is not None:
        control_cfg = yaml.safe_load((args.control / "config.yml").read_text())
        control_rows = read_evaluations(args.control / "evaluations.csv")
        shutil.copy(args.control / "evaluations.csv", out / "control_learning_curves.csv")
        plot_learning_curves(control_rows, out / "control_learning_curves.png",
                             f"control: {control_cfg.get('invocation', control_cfg.get('command', ''))}"[:110])  # fmt: skip

    out_shown = os.path.relpath(out)
    reuse = args.reuse and (out / "sweep.csv").is_file()
    if not reuse and sweep_main([str(args.run), *SWEEP_ARGS, "--out", out_shown]) != 0:
        sys.exit("pong_report: the sweep failed")
    sweep = [{k: float(v) for k, v in r.items()} for r in _rows(out / "sweep.csv")]

    model = USDQN.load(final, device="cpu")
    model.save_acting(out / "pong_us_dqn.zip")
    if reuse and (out / "zoo_pipeline.csv").is_file():
        zoo = [{k: (v if k == "pipeline" else float(v)) for k, v in r.items()} for r in _rows(out / "zoo_pipeline.csv")]
    else:
        zoo = zoo_pipeline_check(final, (0.25, 1.0), args.zoo_games, seed=100) if args.zoo_games else []
    if zoo and not reuse:
        with open(out / "zoo_pipeline.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(zoo[0]))
            writer.writeheader()
            writer.writerows(zoo)

    segments = read_segments(args.run / "segments.csv")
    if segments:
        shutil.copy(args.run / "segments.csv", out / "segments.csv")
    wall = sum(s["wall_s"] for s in segments)
    evaluation = sum(s["eval_s"] for s in segments)
    steps = max((s["end_timesteps"] for s in segments), default=model.num_timesteps)

    at_goal = {r["width"]: r for r in sweep if round(r["width"], 4) in GOAL_WIDTHS}

    def goal(mean: float) -> str:
        return "met" if mean >= GOAL_SCORE else f"missed by {GOAL_SCORE - mean:.2f}"

    verdict = [
        f"| {w:g} | {r['mean_return']:+.2f} ± {r['std_return']:.2f} | {r['min_return']:+.0f} | {goal(r['mean_return'])} |"
        for w, r in ((w, at_goal[w]) for w in GOAL_WIDTHS)
    ]
    hp = cfg["hyperparams"]
    sweep_cmd = "python -m usrl.sweep " + " ".join([str(args.run), *SWEEP_ARGS, "--out", out_shown])
    lines = [
        f"# Pong: one US-DQN, every width (seed {cfg['seed']})",
        "",
        "Training command(s), one per segment (`segments.csv`):",
        "",
        *(
            f"- segment {s['segment']}: `{s['command']}` — env steps {s['start_timesteps']:,} → {s['end_timesteps']:,}, "
            f"wall {s['wall_s'] / 3600:.2f} h (of which evaluations {s['eval_s'] / 60:.1f} min), started {s['started_utc']}"
            for s in segments
        ),  # fmt: skip
        "",
        f"**Env steps: {steps:,}. Wall time: {wall / 3600:.2f} h** summed over segments, including "
        f"{evaluation / 60:.1f} min of periodic evaluations ({cfg['eval']['episodes']} games per width every "
        f"{cfg['eval']['freq']:,} steps at widths {', '.join(f'{w:g}' for w in cfg['eval']['widths'])}).  ",
        f"Machine: {cfg['versions']}.  ",
        f"Hyperparameters (the run's `config.yml`, from the {cfg['env_id']} preset in `usrl/hyperparams/dqn.yml`): "
        + ", ".join(f"{k}={v}" for k, v in hp.items() if k not in ("policy",))
        + ".",
        "",
        f"## The goal: mean score >= {GOAL_SCORE:+g} over 20 full games at each width",
        "",
        f"Final weights, swept with `{sweep_cmd}` (every width replays the same 20 seeded games).",
        "",
        "| width | mean ± std | worst game | goal |",
        "|---:|---:|---:|---|",
        *verdict,
        "",
        "## The sweep (final weights, 20 games per width)",
        "",
        *_table(
            [{**r, "mmacs": r["macs"] / 1e6} for r in sweep],
            [
                ("width", "width", ".2f"),
                ("mmacs", "MMACs", ".2f"),
                ("mean_return", "mean", "+.2f"),
                ("std_return", "std", ".2f"),
                ("min_return", "min", "+.0f"),
                ("max_return", "max", "+.0f"),
            ],
        ),  # fmt: skip
        "",
        "![sweep](sweep.png)",
        "",
        "## Learning curves (periodic evaluations during training)",
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    if control_rows:
        us = {r["timesteps"]: r for r in evals if r["width"] == 1.0}
        ctl = {r["timesteps"]: r for r in control_rows if r["width"] == 1.0}
        chp = control_cfg["hyperparams"]
        changed = {k: v for k, v in chp.items() if hp.get(k) != v}
        lines += [
            "## Control: the same recipe, changed only in "
            + (", ".join(f"{k}={v}" for k, v in changed.items()) or "nothing"),
            "",
            f"Run folder `{args.control}`, command `{control_cfg.get('invocation', control_cfg.get('command', '?'))}`; "
            f"{control_cfg['eval']['episodes']} games per width and evaluation (`control_learning_curves.csv`).",
            "",
            "Full width (1.0), mean ± std over the evaluation games, at the env steps both runs were evaluated:",
            "",
            "| env steps | US-DQN (n=4) | control |",
            "|---:|---:|---:|",
            *(
                f"| {t:,} | {us[t]['mean_return']:+.2f} ± {us[t]['std_return']:.2f} | "
                f"{ctl[t]['mean_return']:+.2f} ± {ctl[t]['std_return']:.2f} |"
                for t in sorted(set(us) & set(ctl))
            ),  # fmt: skip
            "",
            "![control learning curves](control_learning_curves.png)",
            "",
        ]
    if args.note is not None:
        lines += [args.note.read_text().strip(), ""]
    if zoo:
        lines += [
            "## The same model on rl-zoo3's env pipeline",
            "",
            f"Trained on ale-py's vector env (`usrl.envs.AtariVecEnv`); played greedily on both pipelines, "
            f"{args.zoo_games} games per width, seed 100 (`zoo_pipeline.csv`).",
            "",
            *_table(
                zoo,
                [
                    ("pipeline", "pipeline", "s"),
                    ("width", "width", "g"),
                    ("mean_return", "mean", "+.2f"),
                    ("std_return", "std", ".2f"),
                    ("min_return", "worst", "+.0f"),
                ],
            ),  # fmt: skip
            "",
        ]
    size = (out / "pong_us_dqn.zip").stat().st_size / 1e6
    lines += [
        "## The trained model",
        "",
        f"`pong_us_dqn.zip` ({size:.1f} MB): the Q-network at every width in float16 (no target network, optimizer "
        "or replay buffer). `USDQN.load` accepts it (rebuilding the target network and a fresh optimizer, with a "
        "warning); `python -m usrl.sweep benchmarks/results/pong/pong_us_dqn.zip --env Pong` sweeps it.",
        "",
        f"Report written by `python benchmarks/pong_report.py {' '.join(sys.argv[1:] if argv is None else argv)}`.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    print(f"wrote {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
