"""python -m usrl.export: an acting-only zip of a DQN run."""

import subprocess
import sys
from pathlib import Path

import pytest

from usrl import USDQN


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "usrl.export", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    res = subprocess.run(
        [sys.executable, "-m", "usrl.train", "--env", "CartPole-v1", "-n", "300", "--eval-freq", "0",
         "--eval-episodes", "1", "--save-freq", "0", "-f", str(root), "--verbose", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return root / "dqn" / "CartPole-v1_1"


def test_export_run_folder(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.zip"
    res = export(str(run_dir), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "float16" in res.stdout and out.is_file()
    with pytest.warns(UserWarning, match="acting-only"):
        model = USDQN.load(out, device="cpu")
    assert model.policy.width_range == (0.25, 1.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/run", "--out", "x.zip"], "no such run folder or model zip"),
        (["RUN", "--out", "x.onnx"], "--out must end in .zip"),
        (["RUN", "--out", "x.zip", "--dtype", "int8"], "invalid choice"),
    ],
)
def test_bad_input_one_line(run_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(run_dir) if a == "RUN" else (str(tmp_path / a) if a.startswith("x.") else a) for a in args]
    res = export(*args)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written
