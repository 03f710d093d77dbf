"""US-WDSR: shapes per scale and width, sliced weight norm, metrics, the sandwich step, the
train/evaluate/upscale CLIs on the scikit-image demo data, torchrun, resume and bad input."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from usrl.nn import USWNConv2d, export_fixed_width, make_slimmable, width
from usrl.sr import WDSR, psnr, ssim, wdsr_a, wdsr_b
from usrl.sr.train import train_step

SMALL = dict(n_feats=16, n_resblocks=2)


@pytest.mark.parametrize("factory", [wdsr_a, wdsr_b])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_at_every_scale_and_width(factory, scale: int) -> None:  # type: ignore[no-untyped-def]
    model = factory(scale, **SMALL).eval()
    x = torch.rand(2, 3, 10, 13)
    for w in (0.25, 0.6, 1.0):
        with width(model, w), torch.no_grad():
            assert model(x).shape == (2, 3, 10 * scale, 13 * scale)
    head, tail = model.head, model.tail[0]
    assert head.shape_at(0.25) == (3, 4, 1) and tail.shape_at(0.25) == (4, 3 * scale * scale, 1)
    assert model.skip[1].shape_at(0.25) == (3, 3 * scale * scale, 1)  # the skip branch never slims


def test_default_configs_are_the_wdsr_baselines() -> None:
    a, b = wdsr_a(2), wdsr_b(2)
    assert len(a.body) == len(b.body) == 16 and a.head.out_channels == b.head.out_channels == 32
    assert a.body[0].body[0].out_channels == 128  # wide activation x4
    assert [m.out_channels for m in b.body[0].body if isinstance(m, USWNConv2d)] == [192, 25, 32]


def test_sliced_weight_norm_equals_a_static_weight_normalised_conv_of_the_slice() -> None:
    conv = make_slimmable(USWNConv2d(24, 40, 3, padding=1, divisor=1))
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
    x = torch.randn(2, 24, 7, 7)
    for w in (0.25, 0.55, 1.0):
        in_c, out_c, _ = conv.shape_at(w)
        ref = nn.utils.parametrizations.weight_norm(nn.Conv2d(in_c, out_c, 3, padding=1))
        with torch.no_grad():
            ref.parametrizations.weight.original0.copy_(conv.weight_g[:out_c])
            ref.parametrizations.weight.original1.copy_(conv.weight[:out_c, :in_c])
            ref.bias.copy_(conv.bias[:out_c])
        with width(conv, w):
            torch.testing.assert_close(conv(x[:, :in_c]), ref(x[:, :in_c]), rtol=1e-5, atol=1e-6)
        # norm of the used slice: every output filter has norm g at every width
        with width(conv, w):
            folded = conv._folded(in_c, out_c, 1)
        torch.testing.assert_close(folded.flatten(1).norm(dim=1), conv.weight_g[:out_c].flatten())


def test_export_of_a_width_equals_the_slimmable_model() -> None:
    model = wdsr_b(3, **SMALL).eval()
    x = torch.rand(1, 3, 9, 11)
    for w in (0.25, 0.7):
        static = export_fixed_width(model, w)
        assert not any(isinstance(m, USWNConv2d) for m in static.modules())
        with width(model, w), torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-6)


def test_psnr_and_ssim_conventions() -> None:
    torch.manual_seed(0)
    hr = torch.rand(3, 32, 32) * 0.5 + 0.25
    hr = (hr * 255).round() / 255
    assert psnr(hr, hr) == math.inf and ssim(hr, hr) == pytest.approx(1.0)
    for k in (1, 4, 10):
        pred = hr + k / 255  # every pixel off by k levels: MSE = (k / 255)^2
        assert psnr(pred, hr) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
        # on Y the offset is k * (65.481 + 128.553 + 24.966) / 255 levels
        assert psnr(pred, hr, y_channel=True) == pytest.approx(20 * math.log10(255 / (k * 219.0 / 255)), abs=1e-6)
    noisy = hr.clone()
    noisy[:, :2] = 0  # only the shaved border is wrong
    assert psnr(noisy, hr, shave=2) == math.inf and psnr(noisy, hr) < 40
    assert ssim(hr + torch.randn_like(hr) * 0.1, hr) < 0.9
    with pytest.raises(ValueError, match="shape"):
        psnr(hr, hr[:, :16])


@pytest.mark.parametrize(("loss", "weight"), [("mse", 1.0), ("l1", 0.7)])
def test_train_step_gradients_equal_the_hand_built_losses(loss: str, weight: float) -> None:
    torch.manual_seed(0)
    model = wdsr_a(2, **SMALL)
    with torch.no_grad():
        model.tail[0].weight_g.fill_(0.5)  # as after some training (it starts at 0: bicubic output)
    lr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 24, 24)
    widths = [1.0, 0.25, 0.6]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = train_step(model, lr, hr, widths, distill=True, distill_weight=weight, distill_loss=loss)
    assert [r.width for r in step.widths] == widths
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    ref = wdsr_a(2, **SMALL)
    ref.load_state_dict({**model.state_dict(), **before})
    distill = F.mse_loss if loss == "mse" else F.l1_loss
    total = 0
    for i, w in enumerate(widths):
        with width(ref, w):
            x = lr - ref.rgb_mean
            skip = ref.skip(x)
            if i > 0 and weight == 1.0:
                skip = skip.detach()  # purely distilled widths do not train the shared skip branch
            out = ref.tail(ref.body(ref.head(x))) + skip + ref.rgb_mean
        if i == 0:
            teacher = out.detach()
            total = total + F.l1_loss(out, hr)
        else:
            total = total + weight * distill(out, teacher) + (1 - weight) * F.l1_loss(out, hr)
    total.backward()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-7)
    wide = got["body.0.body.0.weight"]  # 64 wide channels: 16 used at w=0.25, 38 at w=0.6
    assert wide[48:].abs().sum() > 0 and wide[:16].abs().sum() > 0
    model.zero_grad()
    train_step(model, lr, hr, [1.0], distill=True, distill_weight=weight, distill_loss=loss)
    assert not torch.equal(model.body[0].body[0].weight.grad[:16], wide[:16])  # the students added gradient


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from usrl.sr.make_demo_data import main

    root = tmp_path_factory.mktemp("sr") / "demo"
    assert main([str(root)]) == 0
    return root


def _train(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "usrl.sr.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)  # fmt: skip


TINY = ["--n-resblocks", "4", "--n-feats", "16", "--patch-size", "24", "--batch-size", "8", "--workers", "0",
        "--cache", "--device", "cpu", "--verbose", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    res = _train(["--data", str(demo), "--out", str(out), "--steps", "300", "--lr", "1e-3", "--eval-every", "150",
                  "--save-every", "150", *TINY], out.parent)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out


def test_short_training_beats_bicubic_on_held_out_images(trained: Path, demo: Path, tmp_path: Path) -> None:
    from usrl.sr.evaluate import main

    for name in ("config.yml", "checkpoint.pt", "model.pt", "evaluations.csv"):
        assert (trained / name).is_file(), name
    assert list((trained / "tb").glob("events.*"))
    out = tmp_path / "eval"
    assert main([str(trained), "--data", str(demo), "--widths", "0.25", "0.5", "1.0", "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    with open(out / "sr_eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["bicubic", "run", "run", "run"]
    bicubic = float(rows[0]["psnr_rgb"])
    full = float(rows[-1]["psnr_rgb"])
    assert full > bicubic + 0.2, (full, bicubic)
    macs = [int(r["macs"]) for r in rows[1:]]
    assert macs == sorted(macs) and macs[0] < macs[-1] / 4
    data = json.loads((out / "sr_eval.json").read_text())
    assert data["rows"][0]["width"] is None and len(data["rows"]) == 4
    assert (out / "sr_eval.png").read_bytes()[:4] == b"\x89PNG"


def test_upscale_cli(trained: Path, demo: Path, tmp_path: Path) -> None:
    from usrl.sr.upscale import main

    src = next((demo / "DIV2K_valid_LR_bicubic" / "X2").glob("*.png"))
    dst = tmp_path / "up.png"
    assert main([str(trained), str(src), str(dst), "--width", "0.5", "--device", "cpu"]) == 0
    w, h = Image.open(src).size
    assert Image.open(dst).size == (2 * w, 2 * h)


def test_resume_continues_to_more_steps(trained: Path, demo: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "model.pt").unlink()
    res = _train(["--resume", str(run), "--steps", "320", "--device", "cpu"], tmp_path)
    assert res.returncode == 0, res.stderr
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 320 and (run / "model.pt").is_file()
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "evaluations.csv"))]
    assert steps[0] == 150 and steps[-1] == 320
    assert len(list((run / "tb").glob("events.*"))) == 2  # same tensorboard folder, a second file


def test_torchrun_two_processes_gloo(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "USRL_CHECKSUM": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "usrl.sr.train",
         "--data", str(demo), "--out", str(out), "--steps", "3", "--eval-every", "3", "--save-every", "3", *TINY],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and (out / "model.pt").is_file()
    sums = sorted(ln.split()[1:] for ln in res.stdout.splitlines() if ln.startswith("rank "))
    assert [r for r, _, _ in sums] == ["0", "1"] and sums[0][2] == sums[1][2]  # same weights on both ranks


def _err(code: int, stderr: str) -> str:
    """The one error line of a command line that exited 2 (asserted)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, stderr
    return lines[0]


def test_bad_input_gets_one_line_and_exit_2(demo: Path, trained: Path, tmp_path: Path, run_main) -> None:  # type: ignore[no-untyped-def]
    from usrl.sr.evaluate import main as evaluate
    from usrl.sr.train import main as train
    from usrl.sr.upscale import main as upscale

    def err(main: Callable[[list[str]], int], argv: list[str]) -> str:
        return _err(*run_main(main, argv))

    bad = tmp_path / "bad"
    shutil.copytree(demo, bad)
    out = tmp_path / "never"
    base = ["--out", str(out), "--steps", "2", *TINY]
    # one in a real process (no traceback, no other output); the rest in this one
    res = _train(["--data", str(tmp_path / "nope"), *base], tmp_path)
    assert "no such data folder" in _err(res.returncode, res.stderr)
    lr_file = next((bad / "DIV2K_train_LR_bicubic" / "X2").glob("*.png"))
    Image.new("RGB", (7, 7)).save(lr_file)
    assert "LR/HR size mismatch" in err(train, ["--data", str(bad), *base])
    shutil.rmtree(bad / "DIV2K_train_LR_bicubic")
    (bad / "DIV2K_train_HR" / "notes.txt").write_text("hello")
    assert "not an image file" in err(train, ["--data", str(bad), *base])
    (bad / "DIV2K_train_HR" / "notes.txt").unlink()
    (bad / "DIV2K_train_HR" / "broken.png").write_bytes(b"not a png")
    assert "not a readable image" in err(train, ["--data", str(bad), *base])
    (bad / "DIV2K_train_HR" / "broken.png").unlink()
    shutil.rmtree(bad / "DIV2K_valid_HR")
    assert "missing folder" in err(train, ["--data", str(bad), *base])
    assert "--width-range" in err(train, ["--data", str(demo), *base, "--width-range", "0.5", "0.2"])
    assert "--patch-size" in err(train, ["--data", str(demo), *base, "--patch-size", "5000"])
    assert not out.exists()
    assert "outside the model's width range" in err(
        evaluate, [str(trained), "--data", str(demo), "--widths", "0.1", "1.0"]
    )
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    assert "cannot read" in err(upscale, [str(corrupt), "a.png", "b.png"])
    err(evaluate, [str(tmp_path / "missing_run"), "--data", str(demo)])
    assert "outside the model's width range" in err(upscale, [str(trained), "a.png", "b.png", "--width", "1.5"])


def test_wdsr_rejects_bad_configs() -> None:
    with pytest.raises(ValueError, match="scale"):
        WDSR(scale=5)
    with pytest.raises(ValueError, match="arch"):
        WDSR(arch="edsr")
    assert np.isfinite(sum(p.sum().item() for p in wdsr_a(4, **SMALL).parameters()))


def test_ssim_equals_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    from usrl.sr.metrics import quantize

    torch.manual_seed(1)
    hr = torch.rand(3, 40, 48)
    pred = (hr + 0.08 * torch.randn_like(hr)).clamp(0, 1)
    a, b = (quantize(t.double()).numpy().transpose(1, 2, 0) for t in (pred, hr))
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)  # fmt: skip
    assert ssim(pred, hr) == pytest.approx(ref, abs=1e-9)


def test_training_makes_lr_images_when_only_hr_is_given(tmp_path: Path) -> None:
    from usrl.sr.make_demo_data import main

    data = tmp_path / "hr_only"
    assert main([str(data), "--hr-only"]) == 0
    assert not (data / "DIV2K_train_LR_bicubic").exists()
    res = _train(["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--scale", "3",
                  "--eval-every", "2", *TINY], tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "evaluations.csv")))
    assert len(rows) == 3 and all(float(r["psnr"]) > 20 for r in rows)  # near bicubic from the start
    macs = [int(r["macs"]) for r in sorted(rows, key=lambda r: float(r["width"]))]
    assert 0 < macs[0] < macs[1] < macs[2] and all(int(r["params"]) > 0 for r in rows)


def test_sigint_saves_the_current_step_and_resume_finishes(demo: Path, tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "sig"
    proc = subprocess.Popen([sys.executable, "-m", "usrl.sr.train", "--data", str(demo), "--out", str(run),
                             "--steps", "100000", "--eval-every", "0", "--save-every", "100000", *TINY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not list((run / "tb").glob("events.*")) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"continue with: python -m usrl.sr.train --resume {run}" in lines[0], stderr
    step = torch.load(run / "checkpoint.pt", weights_only=False)["step"]
    assert 1 <= step < 100000 and f"at step {step};" in lines[0] and not (run / "model.pt").exists()
    res = _train(["--resume", str(run), "--steps", str(step + 3)], tmp_path)
    assert res.returncode == 0, res.stderr
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == step + 3 and ckpt["scheduler"]["last_epoch"] == step + 3 and (run / "model.pt").is_file()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--lr", "inf", "--lr must be a positive number"), ("--lr-step", "0", "--lr-step must be >= 1"),
     ("--save-freq", "0", "--save-freq must be >= 1"), ("--workers", "-1", "--workers must be >= 0"),
     ("--eval-every", "-5", "--eval-freq must be >= 0"), ("--save-every", "0", "--save-freq must be >= 1"),
     ("--batch-size", "100000", "exceeds the"), ("--distill", "l1 --no-distill", "contradicts"),
     ("--distill", "mse --distill-loss l1", "contradicts")],
)  # fmt: skip
def test_numeric_flags_are_checked_before_anything_is_written(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, message: str
) -> None:
    from usrl.sr.train import main

    out = tmp_path / "never"
    args = ["--data", str(demo), "--out", str(out), "--steps", "2", *TINY]
    i = args.index(flag) if flag in args else None
    if i is not None:
        args[i + 1] = value
    else:
        args += [flag, *value.split()]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_sigterm_under_torchrun_stops_every_rank_and_rank_0_saves(demo: Path, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "ddp_sig"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "usrl.sr.train",
         "--data", str(demo), "--out", str(out), "--steps", "100000", "--eval-every", "0", "--save-every", "100000",
         *TINY], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "tb").glob("events.*")) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)  # torchrun's agent passes it on to both workers
    _, stderr = proc.communicate(timeout=120)
    ours = [ln for ln in stderr.splitlines() if ln.startswith("usrl.sr.train: SIGTERM: checkpoint saved at step")]
    assert len(ours) == 1, stderr[-3000:]  # rank 0 alone writes and reports
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert step >= 1 and f"at step {step};" in ours[0] and not (out / "model.pt").exists()
