"""Each slimmable op at a width equals a static torch layer holding the same weight slice."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from usrl.nn import USConv2d, USGroupNorm, USLinear, set_width, slim_channels

WIDTHS = [0.25, 0.37, 0.5, 0.75, 1.0]


def _check_grads(us: nn.Module, static: nn.Module, out_c: int, in_slice: int | None) -> None:
    ref_w = static.weight.grad
    got = us.weight.grad
    idx = (slice(0, out_c),) if in_slice is None else (slice(0, out_c), slice(0, in_slice))
    torch.testing.assert_close(got[idx], ref_w, rtol=1e-5, atol=1e-6)
    untouched = torch.ones_like(got, dtype=torch.bool)
    untouched[idx] = False
    assert torch.count_nonzero(got[untouched]) == 0  # the gradient touches only the used slice
    if us.bias is not None:
        torch.testing.assert_close(us.bias.grad[:out_c], static.bias.grad, rtol=1e-5, atol=1e-6)
        assert torch.count_nonzero(us.bias.grad[out_c:]) == 0


@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("divisor", [1, 8])
def test_linear_matches_static(w: float, divisor: int) -> None:
    us = USLinear(48, 40, divisor=divisor)
    set_width(us, w)
    in_f, out_f = slim_channels(48, w, divisor), slim_channels(40, w, divisor)
    assert us.shape_at(w) == (in_f, out_f)
    static = nn.Linear(in_f, out_f)
    with torch.no_grad():
        static.weight.copy_(us.weight[:out_f, :in_f])
        static.bias.copy_(us.bias[:out_f])
    x = torch.randn(5, in_f, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y_ref = us(x), static(x2)
    torch.testing.assert_close(y, y_ref)
    (y * torch.arange(out_f)).sum().backward()
    (y_ref * torch.arange(out_f)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    _check_grads(us, static, out_f, in_f)
    with torch.no_grad():  # the cached eval path gives the same numbers
        torch.testing.assert_close(us(x), y_ref)


@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize(
    ("kwargs", "in_c", "out_c"),
    [
        ({"kernel_size": 3, "padding": 1}, 32, 24),
        ({"kernel_size": 3, "stride": 2, "bias": False}, 16, 16),
        ({"kernel_size": (1, 3), "dilation": 2}, 8, 40),
    ],
)
def test_conv_matches_static(w: float, kwargs: dict, in_c: int, out_c: int) -> None:
    us = USConv2d(in_c, out_c, **kwargs)
    set_width(us, w)
    ic, oc, g = us.shape_at(w)
    assert g == 1 and ic == slim_channels(in_c, w) and oc == slim_channels(out_c, w)
    static = nn.Conv2d(ic, oc, **kwargs)
    with torch.no_grad():
        static.weight.copy_(us.weight[:oc, :ic])
        if static.bias is not None:
            static.bias.copy_(us.bias[:oc])
    x = torch.randn(2, ic, 9, 9)
    y, y_ref = us(x), static(x)
    torch.testing.assert_close(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    _check_grads(us, static, oc, ic)


@pytest.mark.parametrize("w", WIDTHS)
def test_depthwise_and_grouped_conv(w: float) -> None:
    dw = USConv2d(32, 32, 3, padding=1, groups=32, bias=False)
    set_width(dw, w)
    ic, oc, g = dw.shape_at(w)
    assert ic == oc == g == slim_channels(32, w)
    x = torch.randn(2, ic, 6, 6)
    ref = F.conv2d(x, dw.weight[:oc], None, 1, 1, 1, g)
    torch.testing.assert_close(dw(x), ref)

    grouped = USConv2d(32, 64, 1, groups=4)  # 8 in / 16 out channels per group
    set_width(grouped, w)
    ic, oc, g = grouped.shape_at(w)
    assert ic % 8 == 0 and g == ic // 8 and oc == 16 * g
    static = nn.Conv2d(ic, oc, 1, groups=g)
    with torch.no_grad():
        static.weight.copy_(grouped.weight[:oc])
        static.bias.copy_(grouped.bias[:oc])
    x = torch.randn(2, ic, 5, 5)
    y, y_ref = grouped(x), static(x)
    torch.testing.assert_close(y, y_ref)
    y.sum().backward()
    y_ref.sum().backward()
    _check_grads(grouped, static, oc, None)


def test_expansion_ratio_keeps_exact_multiples() -> None:
    # MobileNetV2 block: 24 -> expand x6 -> depthwise -> project back to 24
    expand = USConv2d(24, 144, 1, ratio=(1, 6))
    dw = USConv2d(144, 144, 3, padding=1, groups=144, ratio=(6, 6))
    project = USConv2d(144, 24, 1, ratio=(6, 1))
    for w in WIDTHS:
        for m in (expand, dw, project):
            set_width(m, w)
        c = slim_channels(24, w)
        assert expand.shape_at(w)[:2] == (c, 6 * c)
        assert dw.shape_at(w) == (6 * c, 6 * c, 6 * c)
        assert project.shape_at(w)[:2] == (6 * c, c)
        x = torch.randn(1, c, 4, 4)
        assert project(dw(expand(x))).shape == (1, c, 4, 4)


def test_flatten_ratio_follows_conv_channels() -> None:
    conv = USConv2d(3, 32, 3, slim_in=False)
    fc = USLinear(32 * 4 * 4, 10, slim_out=False, ratio=(16, 1))
    for w in WIDTHS:
        set_width(conv, w)
        set_width(fc, w)
        c = conv.shape_at(w)[1]
        assert fc.shape_at(w) == (c * 16, 10)
        x = torch.randn(2, 3, 6, 6)
        feats = conv(x)
        out = fc(feats.flatten(1))
        # the fc's weight columns of channel k are the block [16k, 16k+16) of the full-width layout
        full = torch.zeros(2, 32, 4, 4)
        full[:, :c] = feats
        torch.testing.assert_close(out, F.linear(full.flatten(1), fc.weight, fc.bias))


def test_fixed_sides_do_not_slim() -> None:
    head = USLinear(64, 6, slim_out=False)
    stem = USConv2d(4, 32, 8, stride=4, slim_in=False)
    set_width(head, 0.25)
    set_width(stem, 0.25)
    assert head.shape_at(0.25) == (16, 6)
    assert stem.shape_at(0.25)[:2] == (4, 8)


@pytest.mark.parametrize("update", ["add_", "fused_adam", "data", "load_state_dict"])
def test_no_grad_forward_at_a_slim_width_sees_every_weight_update(update: str) -> None:
    # a fused optimizer and ``.data`` writes (SB3's polyak_update) leave the version counter as it
    # was: a cache keyed on it served the first weights forever (individual nets at w < 1 acted,
    # and took TD targets, with their initial weights)
    conv, lin = USConv2d(16, 16, 3), USLinear(16, 8, divisor=1)
    opt = torch.optim.Adam([*conv.parameters(), *lin.parameters()], lr=0.1, fused=True)
    for layer in (conv, lin):
        set_width(layer, 0.5)
    x, v = torch.randn(2, 8, 5, 5), torch.randn(2, 8)
    with torch.no_grad():
        before = conv(x), lin(v)
    if update == "fused_adam":
        (conv(x).sum() + lin(v).sum()).backward()
        opt.step()
    else:
        for layer in (conv, lin):
            if update == "load_state_dict":
                layer.load_state_dict({k: t + 1.0 for k, t in layer.state_dict().items()})
            else:
                with torch.no_grad():
                    (layer.weight.data if update == "data" else layer.weight).add_(1.0)
    with torch.no_grad():
        after = conv(x), lin(v)
        ref = F.conv2d(x, conv.weight[:8, :8], conv.bias[:8]), F.linear(v, lin.weight[:4, :8], lin.bias[:4])
    for b, a, r in zip(before, after, ref, strict=True):
        assert not torch.allclose(b, a)
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("w", WIDTHS)
def test_groupnorm_matches_static(w: float) -> None:
    gn = USGroupNorm(4, 32)
    with torch.no_grad():
        gn.weight.uniform_()
        gn.bias.uniform_()
    set_width(gn, w)
    c = gn.channels_at(w)
    x = torch.randn(2, c, 3, 3)
    ref = F.group_norm(x, 4, gn.weight[:c], gn.bias[:c])
    torch.testing.assert_close(gn(x), ref)


def test_groupnorm_rejects_channels_not_divisible_by_groups() -> None:
    gn = USGroupNorm(16, 32, divisor=4)
    set_width(gn, 0.25)
    assert gn.channels_at(0.25) == 8
    with pytest.raises(ValueError, match="not divisible"):
        gn(torch.randn(2, 8, 2, 2))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        USConv2d(10, 12, 3, groups=4)
    with pytest.raises(ValueError):
        USConv2d(8, 8, 3, groups=8, slim_out=False)
    with pytest.raises(ValueError):
        USLinear(10, 10, ratio=(3, 1))


def test_share_stem_is_exact_and_computes_the_stem_once() -> None:
    from usrl.nn import make_slimmable, share_stem, width

    def build() -> nn.Sequential:
        torch.manual_seed(3)
        return make_slimmable(
            nn.Sequential(
                USConv2d(3, 16, 3, slim_in=False),
                nn.ReLU(),
                nn.Flatten(),
                USLinear(16 * 16, 4, slim_out=False, ratio=(16, 1)),
            )
        )

    a, b = build(), build()
    x = torch.randn(6, 3, 6, 6)
    widths = [1.0, 0.25, 0.6, 0.4]
    for w in widths:  # reference: a backward per width
        with width(a, w):
            a(x).square().mean().backward()
    calls = []
    full_forward = b[0]._full_forward
    b[0]._full_forward = lambda t: calls.append(1) or full_forward(t)
    outs = []
    with share_stem(b):
        total = 0
        for w in widths:
            with width(b, w):
                out = b(x)
            outs.append(out)
            total = total + out.square().mean()
        total.backward()
    for w, out in zip(widths, outs, strict=True):
        with width(a, w), torch.no_grad():
            torch.testing.assert_close(out, a(x))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)
    assert len(calls) == 1  # the stem convolution ran once for four widths
    assert b[0]._stem_cache is None  # and the cache is gone after the block
