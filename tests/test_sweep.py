"""python -m usrl.sweep: one row per width with correct MACs, CSV/JSON/PNG, overlays, bad input."""

import csv
import json
from pathlib import Path

import pytest

from usrl import USDQN
from usrl.sweep import main, parse_widths


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "cartpole.zip"
    m = USDQN(
        "MlpPolicy", "CartPole-v1", learning_starts=200, buffer_size=2000, seed=0, policy_kwargs={"net_arch": [32, 32]}
    )
    m.learn(1000)
    m.save(path)
    return path


def test_parse_widths() -> None:
    assert parse_widths(["0.25:1.0:0.25"]) == [0.25, 0.5, 0.75, 1.0]
    assert len(parse_widths(["0.25:1.0:0.05"])) == 16
    assert parse_widths(["0.3:1.0:0.3"]) == [0.3, 0.6, 0.9, 1.0]
    assert parse_widths(["1.0", "0.5", "0.5"]) == [0.5, 1.0]


def test_sweep_writes_one_row_per_width_with_correct_macs(
    agent: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "s1"
    code = main(
        [
            str(agent),
            "--env",
            "CartPole-v1",
            "--widths",
            "0.25:1.0:0.25",
            "--episodes",
            "3",
            "--n-envs",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["width"]) for r in rows] == [0.25, 0.5, 0.75, 1.0]
    for r in rows:
        h = round(32 * float(r["width"]))  # divisor 1: exact channel counts
        assert int(r["macs"]) == 4 * h + h * h + h * 2
        assert int(r["params"]) == (4 * h + h) + (h * h + h) + (h * 2 + 2)
        assert int(r["n_episodes"]) == 3 and float(r["min_return"]) <= float(r["mean_return"]) <= float(r["max_return"])
    data = json.loads((out / "sweep.json").read_text())
    assert data["env"] == "CartPole-v1" and len(data["rows"]) == 4 and data["episodes"] == 3
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0.750" in capsys.readouterr().out

    # deterministic with a seed
    out2 = tmp_path / "s2"
    assert (
        main(
            [
                str(agent),
                "--env",
                "CartPole-v1",
                "--widths",
                "0.25:1.0:0.25",
                "--episodes",
                "3",
                "--n-envs",
                "2",
                "--out",
                str(out2),
                "--label",
                "again",
                "--compare",
                str(out / "sweep.json"),
            ]
        )
        == 0
    )
    assert (out2 / "sweep.csv").read_text() == (out / "sweep.csv").read_text()
    assert "curves: again, cartpole" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "0.1", "0.5"], "outside the model's width range"),
        (["--widths", "0.25:1.0"], "malformed grid"),
        (["--widths", "a:b:c"], "malformed grid"),
        (["--episodes", "0"], "--episodes"),
        (["--env", "Acrobot-v1"], "do not fit"),
        (["--compare", "missing.json"], "cannot read sweep"),
    ],
)
def test_bad_input(agent: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    argv = [str(agent), "--env", "CartPole-v1", "--out", str(tmp_path / "o"), *args]
    if args[0] == "--env":
        argv = [str(agent), *args, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()
    assert main([str(tmp_path / "nothing.zip")]) == 2
