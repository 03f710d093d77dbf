"""python -m usrl.export: an acting-only zip of a DQN run; one width of an RL, SR (or vision) model as
plain torch layers, checked equal to the slimmable model (onnxruntime for ONNX)."""

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
        (["RUN", "--out", "x.onnx", "--width", "0.1"], "outside the model's width range"),
        (["RUN", "--out", "x.xyz", "--width", "0.5"], "unknown format .xyz"),
    ],
)
def test_bad_input_one_line(run_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(run_dir) if a == "RUN" else (str(tmp_path / a) if a.startswith("x.") else a) for a in args]
    res = export(*args)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_dqn_run_at_a_width_to_onnx_gives_predicts_actions(run_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    out = tmp_path / "w05.onnx"
    res = export(str(run_dir), "--width", "0.5", "--out", str(out))
    assert res.returncode == 0, res.stderr
    model = USDQN.load(run_dir / "CartPole-v1.zip", device="cpu")
    obs = np.stack([model.observation_space.sample() for _ in range(64)]).astype(np.float32)
    session = ort.InferenceSession(str(out))
    (actions,) = session.run(None, {"observation": obs})
    assert np.array_equal(actions, model.predict(obs, deterministic=True, width=0.5)[0])


@pytest.mark.parametrize(("env", "suffix"), [("Pendulum-v1", ".pt2"), ("CartPole-v1", ".pt")])
def test_actor_critic_width_export_gives_predicts_actions(tmp_path: Path, env: str, suffix: str) -> None:
    import numpy as np
    import torch

    from usrl import USPPO
    from usrl.export import main

    model = USPPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0)
    model.learn(64)
    model.save(tmp_path / "ppo.zip")
    out = tmp_path / f"actor{suffix}"
    assert main([str(tmp_path / "ppo.zip"), "--algo", "ppo", "--width", "0.75", "--out", str(out)]) == 0
    actor = torch.export.load(str(out)).module() if suffix == ".pt2" else torch.load(out, weights_only=False)
    obs = np.stack([model.observation_space.sample() * 3 for _ in range(32)]).astype(np.float32)
    expected = model.predict(obs, deterministic=True, width=0.75)[0]
    with torch.no_grad():
        got = actor(torch.as_tensor(obs)).numpy()
    if env == "CartPole-v1":
        assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(got) <= 2.0)


def test_sr_width_export_to_onnx_has_dynamic_frame_size(tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from usrl.export import main
    from usrl.nn import set_width
    from usrl.runtime import save_atomic
    from usrl.sr.models import build_model

    config = dict(arch="wdsr_a", scale=2, n_feats=16, n_resblocks=2, width_range=(0.25, 1.0))
    sr = build_model(config)
    save_atomic(tmp_path / "sr" / "model.pt", {"kind": "usrl.sr", "config": config, "model": sr.state_dict()})
    out = tmp_path / "sr.onnx"
    assert main([str(tmp_path / "sr"), "--width", "0.25", "--out", str(out)]) == 0
    lr = np.random.default_rng(0).random((1, 3, 13, 17), dtype=np.float32)
    (hr,) = ort.InferenceSession(str(out)).run(None, {"lr": lr})
    set_width(sr, 0.25)
    with torch.no_grad():
        expected = sr.eval()(torch.as_tensor(lr)).numpy()
    assert hr.shape == (1, 3, 26, 34)
    np.testing.assert_allclose(hr, expected, rtol=1e-4, atol=1e-5)
