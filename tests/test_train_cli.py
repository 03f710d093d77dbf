"""The main job, `python -m usrl.train`: artifacts, resume after kill -9, atomic writes, bad input."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from usrl.utils import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def train(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "usrl.train", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def test_short_pong_run_produces_every_artifact(tmp_path: Path) -> None:
    res = train(
        "--algo", "dqn", "--env", "Pong", "-n", "1200", "--eval-freq", "1200", "--eval-episodes", "1",
        "--save-freq", "600", "-params", "buffer_size:1000", "learning_starts:600", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    run = tmp_path / "logs" / "dqn" / "Pong_1"
    cfg = yaml.safe_load((run / "config.yml").read_text())
    assert cfg["env_id"] == "PongNoFrameskip-v4" and cfg["hyperparams"]["buffer_size"] == 1000
    hp = cfg["hyperparams"]
    assert hp["replay_buffer_class"] == "usrl.agents.FrameStackReplayBuffer" and hp["n_steps"] == 3
    assert hp["n_envs"] == 10 and hp["n_widths"] == 4
    assert cfg["eval"]["freq"] == 1200 and cfg["save_freq"] == 600  # the flags win over the preset's
    assert "torch" in cfg["versions"] and "usrl.train" in cfg["command"]
    for name in (
        "PongNoFrameskip-v4.zip",
        "best_model.zip",
        "evaluations.csv",
        "monitor.csv",
        "checkpoints/latest.json",
    ):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "rl_model_1200_steps.zip").is_file()
    rows = (run / "evaluations.csv").read_text().splitlines()
    assert rows[0].startswith("timesteps,width,macs,params,mean_return,std_return")
    body = [r.split(",") for r in rows[1:]]
    assert [float(r[1]) for r in body] == [0.25, 0.5, 0.75, 1.0]
    macs = [int(r[2]) for r in body]

    # Nature-CNN by hand: conv 8x8/4 (4->c1) on 20x20, 4x4/2 on 9x9, 3x3 on 7x7, fc 49*c3 -> f, head f -> 6
    def nature(c1: int, c2: int, c3: int, f: int) -> int:
        return 400 * c1 * 4 * 64 + 81 * c2 * c1 * 16 + 49 * c3 * c2 * 9 + 49 * c3 * f + f * 6

    assert macs[0] == nature(8, 16, 16, 128) and macs[-1] == nature(32, 64, 64, 512) == 9_346_048
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((run / "DQN_1").glob("events.*")).parent))
    acc.Reload()
    assert {"eval/return_w0.25", "eval/return_w1.00", "train/distill_loss"} <= set(acc.Tags()["scalars"])
    # a second run numbers itself after the first
    res2 = train(
        "--env",
        "Pong",
        "-n",
        "50",
        "--eval-freq",
        "0",
        "--eval-episodes",
        "1",
        "-params",
        "buffer_size:100",
        "learning_starts:1000",
        "--eval-widths",
        "1.0",
        cwd=tmp_path,
    )
    assert res2.returncode == 0, res2.stderr
    assert (tmp_path / "logs" / "dqn" / "Pong_2" / "config.yml").is_file()


def _latest(run: Path) -> int:
    import json

    path = run / "checkpoints" / "latest.json"
    return json.loads(path.read_text())["timesteps"] if path.exists() else 0


def test_kill_9_then_resume_finishes_with_the_right_total(tmp_path: Path) -> None:
    args = [
        "--env",
        "CartPole-v1",
        "-n",
        "6000",
        "--save-freq",
        "1000",
        "--eval-freq",
        "2000",
        "--eval-episodes",
        "2",
        "--verbose",
        "0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "usrl.train", *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    run = tmp_path / "logs" / "dqn" / "CartPole-v1_1"
    deadline = time.time() + 300
    while time.time() < deadline and _latest(run) < 2000 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _latest(run)
    assert 2000 <= killed_at < 6000, "the run must be killed mid-way"
    monitor = run / "0.monitor.csv"
    games_before = monitor.read_text().splitlines()[2:]
    assert games_before, "the killed segment logged games"
    res = train("--resume", str(run), "--verbose", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = monitor.read_text().splitlines()  # the resumed segment appends to the same file
    assert lines[2 : 2 + len(games_before)] == games_before and len(lines) > 2 + len(games_before)
    assert sum(line.startswith("#") for line in lines) == 1
    from usrl import USDQN

    final = USDQN.load(run / "CartPole-v1.zip")
    assert 6000 <= final.num_timesteps < 6000 + 256  # the preset's train_freq may overshoot once
    import csv

    with open(run / "evaluations.csv") as f:
        steps = sorted({int(r["timesteps"]) for r in csv.DictReader(f)})
    assert steps[:3] == [2000, 4000, 6000]
    assert len(list((run / "DQN_1").glob("events.*"))) == 2  # the same tensorboard run continues
    from usrl.callbacks import read_segments

    first, second = read_segments(run / "segments.csv")  # wall time per segment, killed one included
    assert (first["segment"], first["start_timesteps"], second["segment"]) == (1, 0, 2)
    assert killed_at <= first["end_timesteps"] and first["wall_s"] > 0
    assert second["start_timesteps"] == killed_at and second["end_timesteps"] == final.num_timesteps
    assert "--resume" in second["command"] and "--resume" not in first["command"]
    assert 0 < second["eval_s"] < second["wall_s"]
    # a finished run continues to a larger total with --resume -n
    res = train("--resume", str(run), "-n", "7000", "--verbose", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert 7000 <= USDQN.load(run / "CartPole-v1.zip").num_timesteps < 7000 + 256
    assert yaml.safe_load((run / "config.yml").read_text())["hyperparams"]["n_timesteps"] == 7000
    third = read_segments(run / "segments.csv")[2]
    assert third["start_timesteps"] >= 6000 and "-n 7000" in third["command"]
    res = train("--resume", str(run), "-n", "10", cwd=tmp_path)
    assert res.returncode == 2 and "below the" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_same_seed_same_evaluations(tmp_path: Path) -> None:
    out = []
    for name in ("a", "b"):
        res = train(
            "--env",
            "CartPole-v1",
            "-n",
            "1500",
            "--eval-freq",
            "1500",
            "--eval-episodes",
            "3",
            "--verbose",
            "0",
            "-f",
            name,
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        out.append((tmp_path / name / "dqn" / "CartPole-v1_1" / "evaluations.csv").read_text())
    assert out[0] == out[1]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    res = train(
        "--env", "CartPole-v1", "-n", "5000", "--save-freq", "500", "--eval-freq", "0", "--verbose", "0",
        "-params", "learning_rate:1e30", "learning_starts:1000", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 1
    assert "non-finite loss" in res.stderr and "Traceback" not in res.stderr
    run = tmp_path / "logs" / "dqn" / "CartPole-v1_1"
    assert not (run / "CartPole-v1.zip").exists()
    from usrl import USDQN

    entry = _latest(run)
    assert entry >= 1000
    USDQN.load(run / "checkpoints" / f"rl_model_{entry}_steps.zip")


def test_atomic_write_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    target = tmp_path / "model.zip"
    atomic_write_text(target, "old content")

    def broken(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    # a writer killed mid-write: the target keeps its old content
    code = (
        "import os, sys; from pathlib import Path; from usrl.utils import atomic_write\n"
        "def w(tmp):\n    f = open(tmp, 'w'); f.write('partial'); f.flush(); os.kill(os.getpid(), 9)\n"
        f"atomic_write(Path({str(target)!r}), w)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert res.returncode == -9
    assert target.read_text() == "old content"


def _bad(tmp_path: Path, *args: str, capsys: pytest.CaptureFixture | None = None) -> str:
    """Run a bad command (in-process when ``capsys`` is given) and check the one-line error."""
    argv = [*args, "-n", "100", "-f", str(tmp_path / "logs")]
    if capsys is None:
        res = train(*argv, cwd=tmp_path, timeout=120)
        code, stderr = res.returncode, res.stderr
    else:
        from usrl.train import main

        code = main(argv)
        stderr = capsys.readouterr().err
    assert code == 2, (args, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("usrl.train: error: "), (args, stderr)
    assert not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()], "nothing may be written"
    assert not list((tmp_path / "logs").glob("*/*_*")), "no run folder may be left behind"
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "sac", "--env", "CartPole-v1"], "unknown algorithm 'sac'"),
        (["--env", "CartPol-v1"], "closest: CartPole-v1"),
        (["--env", "Pnog"], "Pong"),
        (["--env", "CartPole-v1", "--eval-widths", "0.5", "1.5"], "outside the width range"),
        (["--env", "CartPole-v1", "--eval-widths", "0.1"], "outside the width range [0.25, 1]"),
        (["--env", "CartPole-v1", "--width-range", "0.6", "0.3"], "--width-range"),
        (["--env", "CartPole-v1", "--width-range", "0", "1"], "--width-range"),
        (["--env", "CartPole-v1", "--n-widths", "0"], "n_widths"),
        (["--env", "CartPole-v1", "-params", "learning_rate"], "malformed -params item"),
        (["--env", "CartPole-v1", "-params", "learning_rat:0.1"], "unknown hyperparameter 'learning_rat'"),
        (["--env", "CartPole-v1", "-params", "learning_rate:fast"], "learning_rate='fast' must be a number > 0"),
        (["--env", "CartPole-v1", "-params", "distill:l3"], "distill"),
        (["--env", "CartPole-v1", "--n-timesteps", "many"], "invalid int value"),
        (["--env", "CartPole-v1", "-i", "missing.zip"], "no such file"),
        (["--resume", "/nonexistent/run"], "not a run folder"),
        (["--env", "CartPole-v1", "--seed", "-3"], "--seed must be >= 0"),
        # every hyperparameter is checked before anything runs (SB3 would fail only once learning starts)
        (["--env", "CartPole-v1", "-params", "batch_size:-4"], "batch_size=-4 must be an integer >= 1"),
        (["--env", "CartPole-v1", "-params", "batch_size:2000", "buffer_size:1000"], "must be <= buffer_size (1000)"),
        (["--env", "CartPole-v1", "-params", "gamma:1.5"], "gamma=1.5 must be a finite number >= 0 and <= 1"),
        (["--env", "CartPole-v1", "-params", "learning_rate:-1e-3"], "learning_rate=-0.001 must be a number > 0"),
        (["--env", "CartPole-v1", "-params", "learning_rate:lin_-1"], "learning_rate='lin_-1'"),
        (["--env", "CartPole-v1", "-params", "learning_rate:nan"], "learning_rate='nan'"),
        (["--env", "CartPole-v1", "-params", "train_freq:0"], "train_freq=0"),
        (["--env", "CartPole-v1", "-params", "gradient_steps:-2"], "gradient_steps=-2 must be an integer >= 1 (or -1)"),
        (["--env", "CartPole-v1", "-params", "target_update_interval:0"], "target_update_interval=0"),
        (["--env", "CartPole-v1", "-params", "exploration_final_eps:1.2"], "exploration_final_eps=1.2"),
        (["--env", "CartPole-v1", "-params", "buffer_size:0"], "buffer_size=0"),
        (["--env", "CartPole-v1", "-params", "n_steps:0"], "n_steps=0"),
        (["--env", "CartPole-v1", "-params", "batch_size:3.5"], "batch_size=3.5 must be an integer"),
        (["--env", "CartPole-v1", "-params", "policy_kwargs:dict(width_range=[0.5, 2])"], "width_range"),
        (["--algo", "ppo", "--env", "CartPole-v1", "-params", "clip_range:0"], "clip_range=0"),
        (["--algo", "ppo", "--env", "CartPole-v1", "-params", "n_epochs:0"], "n_epochs=0"),
        (
            ["--algo", "ppo", "--env", "CartPole-v1", "-params", "n_steps:1", "n_envs:1"],
            "must be > 1 with normalize_advantage",
        ),
        (["--algo", "ppo", "--env", "CartPole-v1", "-params", "use_sde:True"], "gSDE is not supported"),
        (["--algo", "a2c", "--env", "CartPole-v1", "-params", "gae_lambda:2"], "gae_lambda=2"),
        pytest.param(
            ["--env", "CartPole-v1", "--device", "cuda"],
            "no CUDA device",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="has CUDA"),
        ),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert message in _bad(tmp_path, *args, capsys=capsys)


def test_bad_input_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    assert "closest: CartPole-v1" in _bad(tmp_path, "--env", "CartPol-v1")


def test_corrupt_and_truncated_agent_zips_and_bad_presets(tmp_path: Path) -> None:
    from usrl import USDQN

    good = tmp_path / "good.zip"
    USDQN("MlpPolicy", "CartPole-v1", buffer_size=100).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.zip").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.zip").write_bytes(b"PK\x03\x04" + os.urandom(2000))
    for name in ("truncated.zip", "corrupt.zip"):
        assert "cannot load" in _bad(tmp_path, "--env", "CartPole-v1", "-i", str(tmp_path / name))
    (tmp_path / "preset.yml").write_text("CartPole-v1:\n  policy: MlpPolicy\n  n_timesteps: 100\n  learnin_rate: 0.1\n")
    assert "unknown hyperparameter 'learnin_rate'" in _bad(
        tmp_path, "--env", "CartPole-v1", "-conf", str(tmp_path / "preset.yml")
    )
    (tmp_path / "broken.yml").write_text("CartPole-v1: [unclosed\n")
    assert "not valid YAML" in _bad(tmp_path, "--env", "CartPole-v1", "-conf", str(tmp_path / "broken.yml"))


def test_continue_training_a_saved_agent(tmp_path: Path) -> None:
    from usrl import USDQN

    USDQN("MlpPolicy", "CartPole-v1", buffer_size=1000, policy_kwargs={"net_arch": [32]}).save(tmp_path / "agent.zip")
    res = train(
        "--env",
        "CartPole-v1",
        "-i",
        "agent.zip",
        "-n",
        "600",
        "--eval-freq",
        "0",
        "--eval-episodes",
        "1",
        "--verbose",
        "0",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    m = USDQN.load(tmp_path / "logs" / "dqn" / "CartPole-v1_1" / "CartPole-v1.zip")
    assert m.policy.net_arch == [32] and m.num_timesteps >= 600


def test_help_documents_the_flags() -> None:
    res = subprocess.run([sys.executable, "-m", "usrl.train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0
    for flag in (
        "--algo",
        "--env",
        "--n-timesteps",
        "--eval-widths",
        "--width-range",
        "--n-widths",
        "--distill",
        "-params",
        "--device",
        "--resume",
        "--trained-agent",
        "--save-freq",
        "--n-envs",
        "--progress",
    ):
        assert flag in res.stdout, flag


def test_minatar_with_the_small_slimmable_cnn(tmp_path: Path) -> None:
    pytest.importorskip("minatar")
    res = train(
        "--env", "MinAtar/Breakout-v1", "-n", "400", "--eval-freq", "0", "--eval-episodes", "1", "--save-freq", "0",
        "--eval-widths", "0.25", "1.0", "-params", "learning_starts:200", "buffer_size:1000", "--verbose", "0", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    run = tmp_path / "logs" / "dqn" / "MinAtar-Breakout-v1_1"
    rows = (run / "evaluations.csv").read_text().splitlines()[1:]
    # conv 3x3 (4 -> c) on 10x10 -> 8x8, fc 64c -> f, head f -> 3 actions
    c, f = 4, 32
    assert int(rows[0].split(",")[2]) == 64 * c * 4 * 9 + 64 * c * f + f * 3
    from usrl import USDQN
    from usrl.agents import USMinAtarCNN

    assert isinstance(USDQN.load(run / "MinAtar-Breakout-v1.zip").q_net.features_extractor, USMinAtarCNN)


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "usrl.train", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_resumable_checkpoint_then_resume_finishes(tmp_path: Path, signum: int, code: int) -> None:
    args = ["--env", "CartPole-v1", "-n", "6000", "--save-freq", "2000", "--eval-freq", "0", "--eval-episodes", "1",
            "--verbose", "0"]  # fmt: skip
    proc = _start(tmp_path, *args)
    run = tmp_path / "logs" / "dqn" / "CartPole-v1_1"
    deadline = time.time() + 300
    while time.time() < deadline and _latest(run) < 2000 and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # mid-way between periodic checkpoints
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "continue with: python -m usrl.train --resume logs/dqn/CartPole-v1_1" in lines[0], stderr
    stopped_at = _latest(run)
    assert 2000 < stopped_at < 6000  # saved at the stop, not at the last periodic checkpoint
    assert not (run / "CartPole-v1.zip").exists()  # not finished
    res = train("--resume", str(run), "--verbose", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    from usrl import USDQN

    assert 6000 <= USDQN.load(run / "CartPole-v1.zip").num_timesteps < 6000 + 256


def test_second_signal_aborts_without_corrupting_the_last_checkpoint(tmp_path: Path) -> None:
    import json

    proc = _start(tmp_path, "--env", "CartPole-v1", "-n", "100000", "--save-freq", "2000", "--eval-freq", "0",
                  "--verbose", "0")  # fmt: skip
    run = tmp_path / "logs" / "dqn" / "CartPole-v1_1"
    deadline = time.time() + 300
    while time.time() < deadline and _latest(run) < 2000 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    entry = json.loads((run / "checkpoints" / "latest.json").read_text())
    for key in ("model", "rng", "replay_buffer"):
        assert (run / "checkpoints" / entry[key]).is_file()
    assert not list((run / "checkpoints").glob(".*tmp*"))  # no half-written file left behind


def test_grace_period_too_short_for_the_replay_buffer_keeps_the_previous_one(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--env", "CartPole-v1", "-n", "100000", "--save-freq", "2000", "--eval-freq", "0",
                  "--verbose", "0", "--grace-period", "0")  # fmt: skip
    run = tmp_path / "logs" / "dqn" / "CartPole-v1_1"
    deadline = time.time() + 300
    while time.time() < deadline and _latest(run) < 2000 and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    import json

    entry = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert "did not fit the grace period" in stderr and f"buffer of step {entry['replay_buffer_timesteps']}" in stderr
    assert entry["timesteps"] > entry["replay_buffer_timesteps"] >= 2000
    from usrl import USDQN

    model = USDQN.load(run / "checkpoints" / entry["model"])  # what --resume loads: this model, the older buffer
    model.load_replay_buffer(run / "checkpoints" / entry["replay_buffer"])
    # SB3 stores a step's transition after the callbacks run: the buffer of step t holds t - 1
    assert model.replay_buffer.size() == entry["replay_buffer_timesteps"] - 1


def test_a_policy_kwargs_override_sets_one_key_or_replaces_them_all() -> None:
    from usrl import USPPO
    from usrl.hyperparams import HyperparamError, apply_params, check_keys, parse_params

    preset = {"n_steps": 32, "policy_kwargs": {"net_arch": [64, 64], "width_range": [0.25, 1.0]}}
    one = parse_params(["policy_kwargs.slim_critic:False", "n_steps:64"])
    check_keys(one, USPPO, "-params")
    assert apply_params(preset, one) == {
        "n_steps": 64,
        "policy_kwargs": {"net_arch": [64, 64], "width_range": [0.25, 1.0], "slim_critic": False},
    }
    assert preset["policy_kwargs"] == {"net_arch": [64, 64], "width_range": [0.25, 1.0]}  # not modified
    whole = apply_params(preset, parse_params(['policy_kwargs:"dict(net_arch=[32])"']))
    assert whole["policy_kwargs"] == "dict(net_arch=[32])"  # replaced, as rl-zoo3 does (parsed later)
    assert apply_params(whole, {"policy_kwargs.slim_critic": False})["policy_kwargs"] == {
        "net_arch": [32],
        "slim_critic": False,
    }
    for bad in ("policy_kwargs.", "gamma.x"):
        with pytest.raises(HyperparamError, match="unknown hyperparameter"):
            check_keys({bad: 1}, USPPO, "-params")
