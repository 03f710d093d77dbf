"""BatchNorm calibration: stored statistics equal the true statistics of the features."""

import io

import pytest
import torch
from torch import nn

from usrl.nn import (
    USBatchNorm2d,
    USConv2d,
    calibrate_bn,
    clear_bn_calibration,
    get_width,
    is_calibrated,
    make_slimmable,
    set_width,
)


def _net(uncalibrated: str = "error") -> nn.Sequential:
    net = nn.Sequential(
        USConv2d(3, 32, 3, padding=1, slim_in=False, bias=False),
        USBatchNorm2d(32, uncalibrated=uncalibrated),
        nn.ReLU(),
        nn.Dropout(0.5),
        USConv2d(32, 16, 3, bias=False),
        USBatchNorm2d(16, uncalibrated=uncalibrated),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, USBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return make_slimmable(net, (0.25, 1.0))


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    # unequal batch sizes and a shifted distribution, so a naive average of batch stats would differ
    return [torch.randn(n, 3, 7, 7, generator=g) * s + s for n, s in ((5, 1.0), (17, 2.0), (9, 0.5))]


@pytest.mark.parametrize("w", [0.25, 0.37, 0.5, 1.0])
def test_calibrated_stats_equal_true_feature_stats(w: float) -> None:
    net = _net()
    bns = [net[1], net[5]]
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    hooks = [bn.register_forward_hook(lambda m, a, o, i=i: seen[i].append(a[0].detach())) for i, bn in enumerate(bns)]
    before = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("_extra_state")}
    net.train()
    net[3].eval()  # a mixed mode must come back as it was
    used = calibrate_bn(net, _batches(), w)
    for h in hooks:
        h.remove()
    assert used == 3
    for i, bn in enumerate(bns):
        feats = torch.cat([f.transpose(0, 1).reshape(f.shape[1], -1) for f in seen[i]], dim=1).double()
        c = bn.channels_at(w)
        assert feats.shape[0] == c
        mean, var = bn.stats[round(w, 6)]
        torch.testing.assert_close(mean.double(), feats.mean(dim=1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var.double(), feats.var(dim=1, unbiased=True), rtol=1e-5, atol=1e-6)
    # the first BN's input does not depend on any normalisation: check it from scratch too
    x_all = torch.cat(_batches())
    with torch.no_grad(), torch.enable_grad():
        set_width(net, w)
        conv_out = net[0](x_all).detach()
    set_width(net, 1.0)
    ref = conv_out.transpose(0, 1).reshape(conv_out.shape[1], -1).double()
    torch.testing.assert_close(bns[0].stats[round(w, 6)][0].double(), ref.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bns[0].stats[round(w, 6)][1].double(), ref.var(1), rtol=1e-5, atol=1e-5)
    # nothing else changed: weights, width and every module's mode
    after = {k: v for k, v in net.state_dict().items() if not k.endswith("_extra_state")}
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert get_width(net) == 1.0
    assert net.training and not net[3].training and net[1].training


def test_calibration_uses_dropout_off_and_num_batches() -> None:
    net = _net()
    a = _net()
    a.load_state_dict(net.state_dict())
    calibrate_bn(net, _batches(), 0.5, num_batches=2)
    calibrate_bn(a, _batches()[:2], 0.5)
    for x, y in zip(net.modules(), a.modules(), strict=True):
        if isinstance(x, USBatchNorm2d):  # deterministic, so dropout was off; only 2 batches were read
            torch.testing.assert_close(x.stats[0.5], y.stats[0.5])


def test_eval_at_uncalibrated_width_is_an_error_and_calibration_is_cached() -> None:
    net = _net().eval()
    x = torch.randn(4, 3, 7, 7)
    set_width(net, 0.5)
    with pytest.raises(RuntimeError, match=r"no statistics for width 0.5.*calibrate_bn"):
        net(x)
    calibrate_bn(net, _batches(), 0.5)
    calibrate_bn(net, _batches(), 0.75)
    assert is_calibrated(net, 0.5) and is_calibrated(net, 0.75) and not is_calibrated(net, 0.25)
    set_width(net, 0.5)
    y1 = net(x)
    set_width(net, 0.75)
    net(x)
    set_width(net, 0.5)
    torch.testing.assert_close(net(x), y1)  # back to 0.5 with no new calibration
    set_width(net, 0.25)
    with pytest.raises(RuntimeError, match="calibrated: 0.5, 0.75"):
        net(x)


def test_explicit_batch_fallback() -> None:
    net = _net(uncalibrated="batch").eval()
    set_width(net, 0.25)
    x = torch.randn(8, 3, 7, 7)
    out = net(x)
    net.train()
    net[3].eval()
    torch.testing.assert_close(out, net(x))


def test_eval_after_calibration_matches_train_mode_on_the_same_data() -> None:
    """Calibration makes eval at a never-trained width behave like train mode on that data."""
    net = _net()
    x_all = torch.cat(_batches())
    set_width(net, 0.37)
    calibrate_bn(net, [x_all], 0.37)
    net.eval()
    y_eval = net(x_all)
    for m in net.modules():
        if isinstance(m, USBatchNorm2d):
            m.train()  # batch statistics, no dropout
    y_train = net(x_all)
    # only the unbiased/biased variance differs (n = 31 * 49 per channel)
    torch.testing.assert_close(y_eval, y_train, rtol=2e-3, atol=2e-3)


def test_training_forward_drops_stale_statistics_and_state_dict_keeps_them() -> None:
    net = _net()
    calibrate_bn(net, _batches(), 0.5)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    fresh = _net()
    fresh.load_state_dict(torch.load(buf))
    assert is_calibrated(fresh, 0.5)
    x = torch.randn(4, 3, 7, 7)
    set_width(net, 0.5)
    set_width(fresh, 0.5)
    torch.testing.assert_close(net.eval()(x), fresh.eval()(x))
    net.train()
    net(x)  # a training step is about to change the weights
    assert not is_calibrated(net, 0.5)
    clear_bn_calibration(fresh)
    assert not is_calibrated(fresh, 0.5)


def test_no_batches_is_an_error_and_leaves_old_stats() -> None:
    net = _net()
    calibrate_bn(net, _batches(), 0.5)
    old = net[1].stats[0.5]
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_bn(net, [], 0.5)
    assert net[1].stats[0.5] is old
    assert net[1]._accumulator is None
    assert calibrate_bn(nn.Sequential(USConv2d(3, 8, 1)), _batches(), 0.5) == 0  # no BN: nothing to do
