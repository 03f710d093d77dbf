"""Choosing a width at runtime: latency profiles, Pareto widths, the width controller, the
budgeted wrappers and python -m usrl.latency on RL, vision and SR models."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from usrl.deploy import (
    BudgetedAgent,
    BudgetedModule,
    LatencyProfile,
    LatencyRow,
    WidthController,
    measure_latency,
    pareto_widths,
)
from usrl.latency import main as latency_main
from usrl.nn import USLinear, get_width, make_slimmable, profile, set_width


def _rows(latencies: dict[float, float]) -> list[LatencyRow]:
    return [LatencyRow(w, ms, ms * 1.1, int(w * 1000)) for w, ms in latencies.items()]


def _profile(latencies: dict[float, float], noise: float = 0.0) -> LatencyProfile:
    rows = _rows(latencies)
    return LatencyProfile(rows, noise, {"type": "cpu", "threads": 2}, {"name": "m"}, pareto_widths(rows, noise))


def test_pareto_drops_widths_a_wider_one_matches_in_speed() -> None:
    rows = _rows({0.25: 1.0, 0.5: 2.0, 0.75: 3.1, 1.0: 3.0})
    assert pareto_widths(rows) == [0.25, 0.5, 1.0]  # 0.75 is slower than 1.0
    assert pareto_widths(rows, noise_ms=1.05) == [1.0]  # within the noise everything ties with 1.0
    assert pareto_widths(_rows({0.25: 1.0, 0.5: 1.04, 1.0: 2.0}), noise_ms=0.05) == [0.5, 1.0]


def _mlp() -> nn.Module:
    net = nn.Sequential(USLinear(32, 512, slim_in=False), nn.ReLU(), USLinear(512, 512), nn.ReLU(),
                        USLinear(512, 10, slim_out=False))  # fmt: skip
    make_slimmable(net, (0.25, 1.0))
    return net


def test_measure_latency_profiles_every_width_and_restores_the_model(tmp_path: Path) -> None:
    net = _mlp()
    set_width(net, 0.5)
    x = torch.randn(8, 32)
    prof = measure_latency(net, x, [1.0, 0.25, 0.5], rounds=6, warmup=1, name="mlp")
    assert [r.width for r in prof.rows] == [0.25, 0.5, 1.0]
    assert [r.macs for r in prof.rows] == [8 * profile(net, (32,), w)["macs"] for w in (0.25, 0.5, 1.0)]
    assert all(0 < r.median_ms <= r.p90_ms for r in prof.rows) and prof.noise_ms >= 0
    assert get_width(net) == 0.5 and net.training
    assert prof.pareto == pareto_widths(prof.rows, prof.noise_ms) and prof.pareto[-1] == 1.0
    assert prof.device["batch"] == 8 and prof.device["input_shape"] == [32] and prof.model["name"] == "mlp"
    prof.save(tmp_path)
    for name in ("latency.json", "latency.csv", "latency.png"):
        assert (tmp_path / name).is_file()
    again = LatencyProfile.load(tmp_path)
    assert again.to_dict() == prof.to_dict()
    again.check_matches(prof.device, prof.model)
    with pytest.raises(ValueError, match="another device: threads"):
        again.check_matches({**prof.device, "threads": prof.device["threads"] + 1}, prof.model)
    with pytest.raises(ValueError, match="another model: params"):
        again.check_matches(prof.device, {**prof.model, "params": 1})
    (tmp_path / "latency.json").write_text("{}")
    with pytest.raises(ValueError, match="not a latency profile"):
        LatencyProfile.load(tmp_path)
    with pytest.raises(ValueError, match=r"\[0\.25, 1\.0\]"):
        measure_latency(net, x, [0.1], rounds=2)


def test_controller_picks_the_widest_pareto_width_within_the_budget() -> None:
    prof = _profile({0.25: 1.0, 0.5: 2.0, 0.75: 3.1, 1.0: 3.0})
    assert WidthController(prof, 10.0).width == 1.0
    assert WidthController(prof, 2.5, margin=0.1).width == 0.5  # aims at 2.25 ms
    assert WidthController(prof, 3.2, margin=0.0).width == 1.0  # 0.75 is never chosen: 1.0 is as fast
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number"):
            WidthController(prof, bad)
    with pytest.raises(ValueError, match="below the narrowest width's 1 ms"):
        WidthController(prof, 1.0)
    slow = WidthController(prof, 1.0, fallback="narrowest")
    assert slow.width == 0.25 and not slow.fits


def test_online_controller_narrows_when_the_machine_slows_and_widens_with_hysteresis() -> None:
    prof = _profile({0.25: 1.0, 0.5: 2.0, 1.0: 4.0})
    ctl = WidthController(prof, 5.0, online=True, margin=0.0, smoothing=0.5, headroom=0.2)
    assert ctl.width == 1.0
    while ctl.width == 1.0:  # the machine is now twice as slow
        ctl.observe(8.0)
    assert ctl.width == 0.5 and ctl.misses >= 1
    for _ in range(20):
        ctl.observe(2.0 * 2.0)
    assert ctl.width == 0.5 and ctl.expected_ms() <= 5.0
    widths = []
    for _ in range(30):  # back to normal: it widens again once 1.0 fits with 20% to spare
        widths.append(ctl.observe(2.0 if ctl.width == 0.5 else 4.0))
    assert widths[0] == 0.5 and widths[-1] == 1.0 and ctl.slowdown < 1.05
    assert 0 < ctl.miss_rate < 1
    offline = WidthController(prof, 5.0)
    offline.observe(100.0)
    assert offline.width == 1.0 and offline.misses == 1


def test_budgeted_module_runs_each_call_at_the_controllers_width() -> None:
    net = _mlp()
    x = torch.randn(4, 32)
    prof = measure_latency(net, x, [0.25, 0.5, 1.0], rounds=4, warmup=1)
    ctl = WidthController(prof, 1e6)
    ctl.width = 0.5
    budgeted = BudgetedModule(net, ctl)
    with torch.no_grad():
        y = budgeted(x)
        set_width(net, 0.5)
        expected = net(x)
    torch.testing.assert_close(y, expected)
    assert budgeted.last_width == 0.5 and budgeted.last_ms > 0 and ctl.calls == 1


@pytest.fixture(scope="module")
def cartpole_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from usrl import USDQN

    model = USDQN("MlpPolicy", "CartPole-v1", learning_starts=50, seed=0)
    model.learn(200)
    path = tmp_path_factory.mktemp("rl") / "cartpole.zip"
    model.save(path)
    return path


def test_budgeted_agent_acts_at_the_controllers_width(cartpole_zip: Path) -> None:
    from usrl import USDQN

    model = USDQN.load(cartpole_zip)
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    example = torch.as_tensor(obs, device=model.device)  # SB3 loads onto a GPU where there is one
    prof = measure_latency(model.policy.acting_network(), example, [0.25, 1.0], rounds=4, warmup=1)
    ctl = WidthController(prof, 1e6)
    ctl.width = 0.25
    agent = BudgetedAgent(model, ctl)
    actions, _ = agent.predict(obs, deterministic=True)
    assert np.array_equal(actions, model.predict(obs, deterministic=True, width=0.25)[0])
    assert agent.last_width == 0.25 and ctl.calls == 1 and model.policy.get_width() == 1.0


def test_cli_on_an_rl_model(cartpole_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "lat"
    code = latency_main([str(cartpole_zip), "--widths", "0.25:1.0:0.25", "--batch", "16", "--rounds", "4",
                         "--out", str(out), "--budget-ms", "1000"])  # fmt: skip
    assert code == 0
    data = json.loads((out / "latency.json").read_text())
    assert [r["width"] for r in data["rows"]] == [0.25, 0.5, 0.75, 1.0] and data["device"]["batch"] == 16
    assert "budget 1000 ms: width 1 " in capsys.readouterr().out


def test_cli_on_vision_and_sr_checkpoints(tmp_path: Path) -> None:
    from usrl.runtime import save_atomic
    from usrl.sr.models import build_model as build_sr
    from usrl.vision.models import build_model as build_vision

    vision = build_vision({"arch": "us_mobilenet_v2", "num_classes": 4, "resolution": 32, "width_range": (0.35, 1.0)})
    save_atomic(
        tmp_path / "v" / "model.pt", {"kind": "usrl.vision", "config": vision.config, "model": vision.state_dict()}
    )
    assert latency_main([str(tmp_path / "v"), "--widths", "0.35", "1.0", "--rounds", "2"]) == 0
    rows = json.loads((tmp_path / "v" / "latency" / "latency.json").read_text())["rows"]
    assert [r["width"] for r in rows] == [0.35, 1.0] and rows[0]["macs"] < rows[1]["macs"]

    config = dict(arch="wdsr_a", scale=2, n_feats=16, n_resblocks=2, width_range=(0.25, 1.0))
    sr = build_sr(config)
    save_atomic(tmp_path / "s" / "model.pt", {"kind": "usrl.sr", "config": config, "model": sr.state_dict()})
    out = tmp_path / "s_lat"
    assert latency_main([str(tmp_path / "s"), "--widths", "0.25", "1.0", "--input-size", "12x16", "--rounds", "2",
                         "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "latency.json").read_text())["device"]["input_shape"] == [3, 12, 16]


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--budget-ms", "0"], "--budget-ms must be > 0"), (["--widths", "0.1"], "outside the model's width range"),
     (["--batch", "0"], "--batch must be >= 1"), (["--input-size", "8x8"], "--input-size is for vision and SR")],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_exit_2(
    cartpole_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    out = tmp_path / "never"
    assert latency_main([str(cartpole_zip), "--rounds", "2", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_cli_rejects_a_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 64)
    assert latency_main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read" in err[0]
