import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from usrl.nn import (
    USBatchNorm2d,
    USConv2d,
    USLinear,
    calibrate_bn,
    export_fixed_width,
    get_width,
    make_slimmable,
    profile,
    set_width,
)


def _net() -> nn.Sequential:
    """3x8x8 -> conv3x3(16) -> BN -> ReLU -> depthwise3x3 -> avgpool2 -> fc(10)."""
    return make_slimmable(
        nn.Sequential(
            USConv2d(3, 16, 3, padding=1, slim_in=False),
            USBatchNorm2d(16),
            nn.ReLU(),
            USConv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.AvgPool2d(2),
            nn.Flatten(),
            USLinear(16 * 16, 10, slim_out=False, ratio=(16, 1)),
        ),
        (0.25, 1.0),
    )


def test_profile_matches_hand_count() -> None:
    net = _net()
    # width 0.5 -> 8 channels. conv: 8 out x 64 px x (3*9); dw: 8 x 64 x 9; pool: 128 out x 4; fc: 128 x 10
    assert profile(net, (3, 8, 8), 0.5) == {
        "macs": 8 * 64 * 27 + 8 * 64 * 9 + 128 * 4 + 128 * 10,
        "params": (8 * 27 + 8) + 2 * 8 + 8 * 9 + (128 * 10 + 10),
    }
    full = profile(net, (3, 8, 8), 1.0)
    assert full == {
        "macs": 16 * 64 * 27 + 16 * 64 * 9 + 256 * 4 + 256 * 10,
        "params": sum(p.numel() for p in net.parameters()),
    }
    assert get_width(net) == 1.0 and net.training  # width and mode restored; no calibration needed
    static = export_fixed_width(_calibrated(net, 0.5), 0.5)
    assert profile(static, (3, 8, 8)) == profile(net, (3, 8, 8), 0.5)


def _calibrated(net: nn.Module, w: float) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    calibrate_bn(net, [torch.randn(16, 3, 8, 8, generator=g) for _ in range(3)], w)
    return net


@pytest.mark.parametrize("w", [0.25, 0.37, 0.5, 0.75, 1.0])
def test_export_equals_slimmable_model(w: float) -> None:
    net = _calibrated(_net(), w)
    exported = export_fixed_width(net, w)
    assert not any(isinstance(m, (USConv2d, USLinear, USBatchNorm2d)) for m in exported.modules())
    assert not exported.training
    x = torch.randn(5, 3, 8, 8)
    net.eval()
    set_width(net, w)
    torch.testing.assert_close(exported(x), net(x), atol=1e-5, rtol=0)
    # the copy is independent of the original
    with torch.no_grad():
        exported[0].weight.zero_()
    assert net[0].weight.abs().sum() > 0


def test_export_of_uncalibrated_width_is_an_error() -> None:
    net = _calibrated(_net(), 0.5)
    with pytest.raises(RuntimeError, match="calibrate_bn"):
        export_fixed_width(net, 0.75)
    with pytest.raises(ValueError):
        export_fixed_width(net, 0.1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_exported_model_runs_without_usrl(tmp_path: Path) -> None:
    w = 0.5
    net = _calibrated(_net(), w).eval()
    set_width(net, w)
    exported = export_fixed_width(net, w)
    x = torch.randn(3, 3, 8, 8)
    expected = net(x).detach()
    torch.jit.save(torch.jit.script(exported), str(tmp_path / "scripted.pt"))
    torch.jit.save(torch.jit.trace(exported, x), str(tmp_path / "traced.pt"))
    torch.export.save(torch.export.export(exported, (x,)), str(tmp_path / "exported.pt2"))
    torch.save(exported.state_dict(), tmp_path / "state.pt")
    torch.save({"x": x, "y": expected}, tmp_path / "io.pt")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["usrl"] = None  # any import of usrl now fails
        import torch
        from torch import nn
        d = torch.load({str(tmp_path / "io.pt")!r})
        for name in ("scripted.pt", "traced.pt"):
            m = torch.jit.load({str(tmp_path)!r} + "/" + name)
            torch.testing.assert_close(m(d["x"]), d["y"], atol=1e-5, rtol=0)
        ep = torch.export.load({str(tmp_path / "exported.pt2")!r})
        torch.testing.assert_close(ep.module()(d["x"]), d["y"], atol=1e-5, rtol=0)
        # the documented rebuild: the same architecture in plain torch with the width's channel counts
        plain = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(128, 10),
        )
        plain.load_state_dict(torch.load({str(tmp_path / "state.pt")!r}))
        torch.testing.assert_close(plain.eval()(d["x"]), d["y"], atol=1e-5, rtol=0)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_exported_model_exports_to_onnx(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = _calibrated(_net(), 0.75).eval()
    set_width(net, 0.75)
    exported = export_fixed_width(net, 0.75)
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "model.onnx"
    torch.onnx.export(exported, (x,), str(path), input_names=["x"], output_names=["y"])
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), net(x).detach(), atol=1e-5, rtol=0)
