"""US-MobileNet: architectures and MACs, the sandwich step, BN calibration, export, the
train/evaluate/export CLIs on a tiny generated ImageFolder, torchrun (gloo), resume, bad input."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from usrl.nn import USConv2d, calibrate_bn, export_fixed_width, profile, width
from usrl.vision import build_model, us_mobilenet_v1, us_mobilenet_v2
from usrl.vision.models import InvertedResidual
from usrl.vision.train import lr_lambda, param_groups, train_step

TINY = ["--resolution", "32", "--batch-size", "4", "--workers", "0", "--calib-batches", "2", "--no-flip"]


def _cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes of 40x40 images: a bright square in one quadrant per class, with noise."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 4)):
        for c in range(4):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                img = rng.normal(60, 25, (40, 40, 3))
                y, x = divmod(c, 2)
                img[4 + 18 * y : 18 + 18 * y, 4 + 18 * x : 18 + 18 * x] += 120
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "v2"
    r = _cli("usrl.vision.train", "--data", str(data), "--out", str(run), "--epochs", "1", *TINY,
             "--final-widths", "0.35", "0.7", "1.0", "--seed", "3")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return run


@pytest.mark.parametrize(
    "factory, w, mmacs, mparams",
    # MACs/params of the standard width multipliers at 224x224, 1000 classes (MobileNet papers:
    # v1 569M/4.2M at 1.0, 41M at 0.25; v2 300M/3.4M at 1.0, 59M at 0.35); ours, to the unit:
    [(us_mobilenet_v1, 1.0, 568.790528, 4.231976), (us_mobilenet_v1, 0.25, 41.042816, 0.470072),
     (us_mobilenet_v2, 1.0, 300.836992, 3.504872), (us_mobilenet_v2, 0.35, 59.348528, 1.677128)],
)  # fmt: skip
def test_macs_and_params_are_the_standard_architectures(factory, w: float, mmacs: float, mparams: float) -> None:  # type: ignore[no-untyped-def]
    cost = profile(factory(), (3, 224, 224), w)
    assert cost["macs"] == round(mmacs * 1e6) and cost["params"] == round(mparams * 1e6)


def test_shapes_per_width_and_the_exact_expansion_ratio() -> None:
    model = us_mobilenet_v2(num_classes=7, resolution=64).eval()
    x = torch.randn(2, 3, 64, 64)
    macs = []
    for w in (0.35, 0.4711, 0.8, 1.0):
        calibrate_bn(model, [torch.randn(4, 3, 64, 64)], w)
        with width(model, w), torch.no_grad():
            assert model(x).shape == (2, 7)
        macs.append(profile(model, (3, 64, 64), w)["macs"])
        for block in (m for m in model.modules() if isinstance(m, InvertedResidual)):
            convs = [m for m in block.modules() if isinstance(m, USConv2d)]
            if len(convs) == 3:  # expansion: hidden channels are exactly t x the block's input channels
                c_in, hidden, _ = convs[0].shape_at(w)
                assert hidden == 6 * c_in and convs[1].shape_at(w)[2] == hidden  # depthwise stays depthwise
        assert model.features[-1][0].shape_at(w)[1] == 1280  # the last 1x1 conv's output never slims
    assert macs == sorted(macs) and len(set(macs)) == 4
    v1 = us_mobilenet_v1(num_classes=5, resolution=32)
    assert v1.classifier[1].shape_at(0.25) == (256, 5)  # classifier input slims, outputs do not


def test_train_step_gradients_equal_the_hand_built_losses() -> None:
    torch.manual_seed(0)
    model = us_mobilenet_v2(num_classes=5, resolution=32, dropout=0.0)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 5, (6,))
    train_step(model, x, y, [1.0, 0.35, 0.6], label_smoothing=0.1)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    teacher = model(x)
    loss = F.cross_entropy(teacher, y, label_smoothing=0.1)
    target = F.softmax(teacher.detach(), dim=1)
    for w in (0.35, 0.6):
        with width(model, w):
            loss = loss - (target * F.log_softmax(model(x), dim=1)).sum(1).mean()
    loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)

    # the students' losses reach only their own slices: channels beyond width 0.6 see no gradient
    model.zero_grad()
    train_step(model, x, y, [1.0, 0.35, 0.6])
    student_only = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    stem = model.features[0][0]
    out_06 = stem.shape_at(0.6)[1]
    name = "features.0.0.weight"
    diff = student_only[name] - dict(model.named_parameters())[name].grad
    assert diff[out_06:].abs().max() == 0 and diff[:out_06].abs().max() > 0


def test_one_step_changes_weights_at_every_sandwich_width() -> None:
    torch.manual_seed(1)
    model = us_mobilenet_v1(num_classes=4, resolution=32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(param_groups(model, 0.0), lr=0.1, momentum=0.9, nesterov=True)
    train_step(model, torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,)), [1.0, 0.25, 0.5])
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(before)  # every parameter tensor moved, the widest channels included


def test_weight_decay_groups_skip_depthwise_bn_and_bias() -> None:
    model = us_mobilenet_v2(num_classes=3, resolution=32)
    decay, no_decay = (g["params"] for g in param_groups(model, 4e-5))
    dw = model.features[1].conv[0][0]  # first block: depthwise 3x3
    assert dw.groups > 1 and any(p is dw.weight for p in no_decay) and not any(p is dw.weight for p in decay)
    assert all(p.ndim > 1 for p in decay) and len(decay) + len(no_decay) == len(list(model.parameters()))
    assert any(p is model.classifier[1].weight for p in decay)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    lin, cos = lr_lambda(100, 10, "linear"), lr_lambda(100, 10, "cosine")
    assert lin(0) == pytest.approx(0.1) and lin(9) == 1.0 and lin(10) == 1.0
    assert lin(55) == pytest.approx(0.5) and cos(55) == pytest.approx(0.5) and lin(100) == cos(100) == 0.0


def test_bn_calibration_at_an_untrained_width_matches_train_mode_behaviour() -> None:
    torch.manual_seed(2)
    model = us_mobilenet_v2(num_classes=6, resolution=64, dropout=0.0)
    x = torch.randn(128, 3, 64, 64)
    w = 0.6123  # never trained, never seen
    with width(model, w), torch.no_grad():
        model.train()
        train_mode = model(x)
    calibrate_bn(model, [x], w)  # one batch: the calibrated statistics are that batch's
    with width(model, w), torch.no_grad():
        model.eval()
        eval_mode = model(x)
    # the two differ only by unbiased vs biased variance (n / (n - 1), n >= 512 values per channel)
    assert (train_mode.argmax(1) == eval_mode.argmax(1)).float().mean() >= 0.95
    assert (eval_mode - train_mode).abs().mean() < 0.05 * train_mode.std()
    calibrate_bn(model, [3 * x + 1], w)  # statistics of other data: the check above would fail
    with width(model, w), torch.no_grad():
        assert (model(x) - train_mode).abs().mean() > 0.2 * train_mode.std()
    with pytest.raises(RuntimeError, match="calibrate_bn"):
        with width(model, 0.5), torch.no_grad():
            model(x)


def test_export_of_a_width_equals_the_slimmable_model() -> None:
    model = us_mobilenet_v1(num_classes=5, resolution=32).eval()
    x = torch.randn(3, 3, 32, 32)
    calibrate_bn(model, [torch.randn(16, 3, 32, 32)], 0.5)
    static = export_fixed_width(model, 0.5)
    with width(model, 0.5), torch.no_grad():
        torch.testing.assert_close(static(x), model(x))
    assert not any(isinstance(m, USConv2d) for m in static.modules())
    assert sum(p.numel() for p in static.parameters()) == profile(model, (3, 32, 32), 0.5)["params"]


def test_build_model_round_trips_and_rejects_bad_configs() -> None:
    model = us_mobilenet_v2(num_classes=3, resolution=48)
    assert build_model(model.config).config == model.config
    with pytest.raises(ValueError, match="supports widths"):
        us_mobilenet_v2(width_range=(0.25, 1.0))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"arch": "resnet50"})
    with pytest.raises(ValueError, match="resolution"):
        us_mobilenet_v1(resolution=16)


def test_train_cli_writes_every_artifact(trained: Path) -> None:
    for name in ("config.yml", "checkpoint.pt", "model.pt", "evaluations.csv", "spectrum.csv", "spectrum.json",
                 "spectrum.png"):  # fmt: skip
        assert (trained / name).is_file(), name
    rows = list(csv.DictReader(open(trained / "spectrum.csv")))
    assert [float(r["width"]) for r in rows] == [0.35, 0.7, 1.0]
    assert all(int(r["n_images"]) == 16 and 0 <= float(r["top1"]) <= float(r["top5"]) <= 100 for r in rows)
    macs = [int(r["macs"]) for r in rows]
    assert macs == [
        profile(us_mobilenet_v2(num_classes=4, resolution=32), (3, 32, 32), w)["macs"] for w in (0.35, 0.7, 1.0)
    ]
    assert any(p.name.startswith("events.out.tfevents") for p in (trained / "tb").iterdir())
    history = list(csv.DictReader(open(trained / "evaluations.csv")))
    assert [float(r["width"]) for r in history] == [0.35, 0.675, 1.0] and {r["epoch"] for r in history} == {"1"}
    assert [int(r["macs"]) for r in history][::2] == macs[::2]  # the same cost columns as the spectrum
    config = yaml.safe_load((trained / "config.yml").read_text())
    assert config["model"]["arch"] == "us_mobilenet_v2" and (config["args"]["epochs"], config["args"]["seed"]) == (1, 3)


def test_evaluate_and_export_clis(trained: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    r = _cli("usrl.vision.evaluate", str(trained), "--widths", "0.35:1.0:0.325", "--batch-size", "4", "--workers", "0",
             "--calib-batches", "2", "--out", str(out), "--compare", str(trained / "spectrum.json"), "--save")  # fmt: skip
    assert r.returncode == 0, r.stderr
    spectrum = json.loads((out / "spectrum.json").read_text())
    assert [row["width"] for row in spectrum["rows"]] == [0.35, 0.675, 1.0] and (out / "spectrum.png").is_file()
    # the same calibration batches and the same weights give the trainer's numbers at 0.35 and 1.0
    trainer = {row["width"]: row["top1"] for row in json.loads((trained / "spectrum.json").read_text())["rows"]}
    assert {row["width"]: row["top1"] for row in spectrum["rows"] if row["width"] in trainer} == {
        w: v for w, v in trainer.items() if w != 0.7
    }

    for suffix in (".pt2", ".pt"):
        r = _cli("usrl.vision.export", str(trained), "--width", "0.5", "--out", str(tmp_path / f"m{suffix}"),
                 "--workers", "0", "--batch-size", "8", "--calib-batches", "2")  # fmt: skip
        assert r.returncode == 0, r.stderr
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    module = torch.load(tmp_path / "m.pt", weights_only=False)
    x = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(program(x), module(x))


def test_resume_continues_to_more_epochs(trained: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained, run)
    r = _cli("usrl.vision.train", "--resume", str(run), "--epochs", "2")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and sorted({h["epoch"] for h in ckpt["history"]}) == [1, 2]
    before = torch.load(trained / "checkpoint.pt", weights_only=False)
    assert ckpt["scheduler"]["last_epoch"] == 2 * before["scheduler"]["last_epoch"]
    assert not torch.equal(ckpt["model"]["classifier.1.weight"], before["model"]["classifier.1.weight"])


def test_torchrun_two_processes_gloo(data: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "USRL_CHECKSUM": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "usrl.vision.train", "--data", str(data), "--out", str(tmp_path / "ddp"), "--epochs", "1",
           "--arch", "us_mobilenet_v1", "--device", "cpu", "--final-widths", "0.25", "1.0", *TINY]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    sums = sorted(line.split()[-1] for line in r.stdout.splitlines() if "checksum" in line)
    assert len(sums) == 2 and sums[0] == sums[1]  # both ranks hold the same weights
    rows = json.loads((tmp_path / "ddp" / "spectrum.json").read_text())["rows"]
    assert [row["n_images"] for row in rows] == [16, 16]  # the val shards together cover each image once
    ckpt = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)
    assert ckpt["scheduler"]["last_epoch"] == 40 // (4 * 2)  # global batch 8 over 40 training images


def test_make_demo_data(tmp_path: Path) -> None:
    r = _cli("usrl.vision.make_demo_data", str(tmp_path / "digits"), "--size", "32")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "digits" / "train").iterdir()) == [str(d) for d in range(10)]
    n = {s: sum(1 for _ in (tmp_path / "digits" / s).rglob("*.png")) for s in ("train", "val")}
    assert n["train"] + n["val"] == 1797 and 350 <= n["val"] <= 370
    with Image.open(next((tmp_path / "digits" / "val" / "3").iterdir())) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    again = _cli("usrl.vision.make_demo_data", str(tmp_path / "digits"))
    assert again.returncode == 2 and "already holds" in again.stderr


def _bad(tmp_path: Path, data: Path, trained: Path) -> list[tuple[str, list[str], str]]:
    empty = tmp_path / "empty_class"
    for split in ("train", "val"):
        (empty / split / "a").mkdir(parents=True)
        (empty / split / "b").mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(empty / split / "a" / "x.png")
    (empty / "val" / "b" / "y.png").write_bytes(b"")
    Image.new("RGB", (40, 40)).save(empty / "val" / "b" / "z.png")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    sr = tmp_path / "sr.pt"
    torch.save({"kind": "usrl.sr", "config": {}, "model": {}}, sr)
    train = ["usrl.vision.train", "--data", str(data), "--out", str(tmp_path / "never"), *TINY]
    return [
        ("missing data", [*train[:2], str(tmp_path / "nope"), *train[3:]], "no such folder"),
        ("empty class", [*train[:2], str(empty), *train[3:]], "holds no images"),
        ("v2 below 0.35", [*train, "--width-range", "0.25", "1.0"], "supports widths in [0.35, 1]"),
        ("eval width out of range", [*train, "--eval-widths", "0.3"], "outside the width range"),
        ("malformed flag", [*train, "--epochs", "two"], "invalid int value"),
        ("bad lr", [*train, "--lr", "-1"], "--lr must be"),
        ("resume another arch", ["usrl.vision.train", "--resume", str(trained), "--arch", "us_mobilenet_v1"],
         "holds a us_mobilenet_v2"),
        ("resume corrupt", ["usrl.vision.train", "--resume", str(broken)], "cannot read"),
        ("evaluate sr checkpoint", ["usrl.vision.evaluate", str(sr)], "holds a usrl.sr model"),
        ("evaluate width", ["usrl.vision.evaluate", str(trained), "--widths", "0.25", "1.0"], "outside the model's width"),
        ("export format", ["usrl.vision.export", str(trained), "--width", "0.5", "--out", str(tmp_path / "m.xyz")],
         "unknown format"),
        ("export width", ["usrl.vision.export", str(trained), "--width", "1.5", "--out", str(tmp_path / "m.pt2")],
         "outside the model's width"),
    ]  # fmt: skip


def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, data: Path, trained: Path, run_main) -> None:  # type: ignore[no-untyped-def]
    import importlib

    for i, (name, argv, message) in enumerate(_bad(tmp_path, data, trained)):
        if i == 0:  # one in a real process: no traceback, no other output
            r = _cli(*argv)
            code, stderr = r.returncode, r.stderr
        else:
            code, stderr = run_main(importlib.import_module(argv[0]).main, argv[1:])
        assert code == 2, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (name, stderr)
    assert not (tmp_path / "never").exists() and not (tmp_path / "m.pt2").exists()


def test_sigterm_stops_inside_an_epoch_and_resume_runs_its_remaining_steps(data: Path, tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "sig"
    proc = subprocess.Popen([sys.executable, "-m", "usrl.vision.train", "--data", str(data), "--out", str(run),
                             "--epochs", "200", "--eval-every", "0", "--verbose", "0", *TINY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoint.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"continue with: python -m usrl.vision.train --resume {run}" in lines[0], stderr
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    epoch, inside = ckpt["epoch"], ckpt["step_in_epoch"]
    assert 1 <= epoch < 200 and 0 <= inside < 10 and ckpt["scheduler"]["last_epoch"] == 10 * epoch + inside
    assert not (run / "model.pt").exists()
    r = _cli("usrl.vision.train", "--resume", str(run), "--epochs", str(epoch + 1), "--final-widths", "1.0")
    assert r.returncode == 0, r.stderr
    done = torch.load(run / "checkpoint.pt", weights_only=False)
    assert (done["epoch"], done["step_in_epoch"], done["scheduler"]["last_epoch"]) == (epoch + 1, 0, 10 * (epoch + 1))
    assert (run / "model.pt").is_file()
