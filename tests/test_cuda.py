"""The CUDA paths, where a CUDA device is present (skipped elsewhere, CI included): the sandwich
step's gradients and BN calibration against the CPU's, every agent training, saving and loading
across devices, the Pong main job, and the vision and SR command lines on ``--device cuda``."""

import copy
import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from usrl import USA2C, USDQN, USPPO
from usrl.nn import calibrate_bn, export_fixed_width, kl_divergence, sandwich_step, width
from usrl.vision import us_mobilenet_v2

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _full_precision() -> Iterator[None]:
    """TF32 off, so that CUDA's float32 arithmetic can be held to the CPU's."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_sandwich_step_and_bn_calibration_match_the_cpu() -> None:
    cpu = us_mobilenet_v2(num_classes=5, resolution=32, dropout=0.0)
    gpu = copy.deepcopy(cpu).cuda()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 5, (32,))
    widths = [1.0, 0.35, 0.5, 0.8]
    grads = []
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        xd, yd = x.to(dev), y.to(dev)
        res = sandwich_step(
            model, widths, lambda own, m=model, xd=xd: m(xd), lambda out, own, yd=yd: F.cross_entropy(out, yd),
            lambda out, teacher: kl_divergence(out, teacher),
        )  # fmt: skip
        assert res.total is not None
        res.total.backward()
        grads.append([p.grad.cpu() for p in model.parameters()])
    # the same arithmetic in another order: float32 differences only (on this CPU against float64:
    # ~4e-4 of the gradient's norm over the whole net). A wrong slice or device would be O(1).
    norm = torch.sqrt(sum((g**2).sum() for g in grads[0]))
    diff = torch.sqrt(sum(((gg - gc) ** 2).sum() for gc, gg in zip(*grads, strict=True)))
    worst = max(((gg - gc).norm() / (gc.norm() + 1e-3 * norm)).item() for gc, gg in zip(*grads, strict=True))
    print(f"gradients CUDA vs CPU: {diff / norm:.2e} of the norm, worst tensor {worst:.2e}")
    assert diff / norm < 1e-2 and worst < 5e-2

    batches = [torch.randn(16, 3, 32, 32) for _ in range(3)]
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        model.eval()
        calibrate_bn(model, [b.to(dev) for b in batches], 0.5)
    with width(cpu, 0.5), width(gpu, 0.5), torch.no_grad():
        out_c, out_g = cpu(x), gpu(x.cuda())
    err = ((out_g.cpu() - out_c).norm() / out_c.norm()).item()
    print(f"calibrated logits at 0.5, CUDA vs CPU: {err:.2e} of the norm")
    assert err < 1e-3
    fixed = export_fixed_width(gpu, 0.5)  # the exported net stays on the model's device
    with torch.no_grad():
        torch.testing.assert_close(fixed(x.cuda()), out_g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "algo, env_id, kwargs",
    [
        (USDQN, "CartPole-v1", dict(learning_starts=200, train_freq=4, buffer_size=2000)),
        (USPPO, "CartPole-v1", dict(n_steps=128, batch_size=64, n_epochs=2, teacher_guard="drift")),
        (USA2C, "CartPole-v1", dict(n_steps=8, teacher_guard="drift")),
        (USPPO, "Pendulum-v1", dict(n_steps=128, batch_size=64, n_epochs=1, use_sde=True)),
    ],
    ids=["dqn", "ppo-drift", "a2c-drift", "ppo-gsde"],
)
def test_agents_train_on_cuda_and_load_on_the_cpu(algo: type, env_id: str, kwargs: dict, tmp_path: Path) -> None:
    model = algo("MlpPolicy", env_id, seed=0, device="cuda", **kwargs)
    assert model.device.type == "cuda"
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(600)
    after = list(model.policy.parameters())
    assert all(p.device.type == "cuda" for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    model.save(tmp_path / "m.zip")
    loaded = algo.load(tmp_path / "m.zip", device="cpu")
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    for w in (0.25, 0.6, 1.0):
        model.set_width(w)
        loaded.set_width(w)
        a_gpu, _ = model.predict(obs, deterministic=True)
        a_cpu, _ = loaded.predict(obs, deterministic=True)
        np.testing.assert_allclose(a_cpu, a_gpu, rtol=1e-4, atol=1e-4)


def test_pong_main_job_on_cuda(tmp_path: Path) -> None:
    res = _cli("usrl.train", "--algo", "dqn", "--env", "Pong", "-n", "1200", "--eval-freq", "0", "--eval-episodes",
               "1", "--eval-widths", "0.25", "1.0", "--save-freq", "0", "--device", "cuda", "-params",
               "buffer_size:1000", "learning_starts:600", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "logs" / "dqn" / "Pong_1"
    rows = list(csv.DictReader((run / "evaluations.csv").open()))
    assert [float(r["width"]) for r in rows] == [0.25, 1.0]
    model = USDQN.load(run / "PongNoFrameskip-v4.zip", device="cuda")
    assert model.num_timesteps >= 1200 and next(model.policy.parameters()).device.type == "cuda"
    lat = _cli("usrl.latency", str(run), "--device", "cuda", "--widths", "0.25", "1.0", "--rounds", "5", cwd=tmp_path)
    assert lat.returncode == 0, lat.stderr[-3000:]


def test_vision_and_sr_command_lines_on_cuda(tmp_path: Path) -> None:
    vision_data, sr_data = tmp_path / "imgs", tmp_path / "div2k"
    assert _cli("usrl.vision.make_demo_data", str(vision_data), cwd=tmp_path).returncode == 0
    run = tmp_path / "vision"
    res = _cli("usrl.vision.train", "--data", str(vision_data), "--out", str(run), "--epochs", "1", "--resolution",
               "32", "--batch-size", "16", "--workers", "2", "--calib-batches", "2", "--final-widths", "0.35", "1.0",
               "--device", "cuda", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ev = _cli("usrl.vision.evaluate", str(run), "--widths", "0.35", "1.0", "--batch-size", "16", "--workers", "0",
              "--device", "cuda", "--out", str(tmp_path / "vision_eval"), cwd=tmp_path)  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]

    assert _cli("usrl.sr.make_demo_data", str(sr_data), cwd=tmp_path).returncode == 0
    sr = tmp_path / "sr"
    res = _cli("usrl.sr.train", "--data", str(sr_data), "--out", str(sr), "--steps", "60", "--eval-every", "30",
               "--save-every", "30", "--n-resblocks", "4", "--n-feats", "16", "--patch-size", "24", "--batch-size",
               "8", "--workers", "0", "--cache", "--device", "cuda", "--verbose", "0", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    src = next((sr_data / "DIV2K_valid_LR_bicubic" / "X2").glob("*.png"))
    up = _cli("usrl.sr.upscale", str(sr), str(src), str(tmp_path / "up.png"), "--width", "0.5", "--device", "cuda",
              cwd=tmp_path)  # fmt: skip
    assert up.returncode == 0, up.stderr[-3000:]
