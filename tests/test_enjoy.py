"""python -m usrl.enjoy: full episodes at a width, returns printed, a video recorded."""

from pathlib import Path

import numpy as np
import pytest

from usrl.enjoy import main


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from usrl import USPPO

    model = USPPO("MlpPolicy", "CartPole-v1", n_steps=64, seed=0)
    model.learn(64)
    path = tmp_path_factory.mktemp("enjoy") / "ppo.zip"
    model.save(path)
    return path


def test_plays_the_episodes_at_the_width_and_records_them(
    ppo_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import imageio.v2 as imageio

    from usrl import USPPO
    from usrl.envs import make_vec_env
    from usrl.evaluation import evaluate_at_width

    video = tmp_path / "cartpole.gif"
    args = [str(ppo_zip), "--algo", "ppo", "--env", "CartPole-v1", "--width", "0.25", "--episodes", "3"]
    assert main([*args, "--seed", "5", "--record", str(video)]) == 0
    out = capsys.readouterr().out
    lengths = [int(line.split(", ")[1].split()[0]) for line in out.splitlines() if line.startswith("episode ")]
    assert len(lengths) == 3 and "at width 0.25: mean return" in out
    frames = imageio.mimread(video)
    assert len(frames) == lengths[0] and frames[0].shape[-1] in (3, 4)  # the first episode, frame by frame
    # the same games as evaluating at that width
    model = USPPO.load(ppo_zip)
    env = make_vec_env("CartPole-v1", n_envs=1, seed=5, eval_env=True)
    res = evaluate_at_width(model, env, 0.25, 3)
    assert np.isclose(res.mean_return, np.mean(lengths))


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--width", "0.1"], "outside the model's width range"), (["--record", "x.avi"], "unknown video format"),
     (["--episodes", "0"], "--episodes must be >= 1"), (["--env", "NoSuchEnv-v9"], "NoSuchEnv")],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    ppo_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    args = [str(ppo_zip), "--algo", "ppo", "--env", "CartPole-v1", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
