import math

import pytest
import torch
from torch import nn

from usrl.nn import (
    USConv2d,
    USLinear,
    get_width,
    get_width_range,
    make_divisible,
    make_slimmable,
    sandwich_widths,
    set_width,
    width,
)


@pytest.mark.parametrize(
    ("v", "divisor", "min_value", "expected"),
    [
        (32 * 0.25, 8, None, 8),
        (32 * 0.37, 8, None, 16),  # 11.84 -> 8 would lose > 10%, so 16
        (64 * 0.5, 8, None, 32),
        (12, 8, None, 16),  # 12 -> round half up to 16
        (3, 8, None, 8),  # at least the divisor
        (3, 8, 2, 10),  # 3 -> 0 -> min 2 -> 2 < 2.7 -> +8 (min_value off the grid stays off it)
        (100 * 0.37, 1, None, 37),
        (36.6, 1, None, 37),
        (1280 * 1.0, 8, None, 1280),
        (19, 8, None, 24),  # 19 -> 16 (16 < 17.1 = 0.9*19) -> 24
    ],
)
def test_make_divisible(v: float, divisor: int, min_value: int | None, expected: int) -> None:
    assert make_divisible(v, divisor, min_value) == expected


def test_make_divisible_never_loses_more_than_10_percent() -> None:
    for divisor in (1, 4, 8, 16):
        for v in torch.linspace(1, 500, 997).tolist():
            out = make_divisible(v, divisor)
            assert out % divisor == 0
            assert out >= 0.9 * v
            assert out >= divisor


def _net() -> nn.Sequential:
    return nn.Sequential(
        USConv2d(3, 16, 3, slim_in=False),
        nn.ReLU(),
        nn.Flatten(),
        USLinear(16 * 6 * 6, 4, slim_out=False, ratio=(36, 1)),
    )


def test_width_control_and_context_restores() -> None:
    net = make_slimmable(_net(), (0.25, 1.0))
    assert get_width(net) == 1.0
    assert get_width_range(net) == (0.25, 1.0)
    set_width(net, 0.5)
    assert net[0].width_control.width == 0.5 and net[3].width_control is net[0].width_control
    with width(net, 0.25):
        assert get_width(net) == 0.25
    assert get_width(net) == 0.5
    with pytest.raises(RuntimeError), width(net, 0.75):
        raise RuntimeError("boom")
    assert get_width(net) == 0.5  # restored after an exception too


@pytest.mark.parametrize("bad", [0.1, 1.01, 0.0, -0.5, math.nan, math.inf, "half", None])
def test_bad_width_raises_value_error_naming_range(bad: object) -> None:
    net = make_slimmable(_net(), (0.25, 1.0))
    with pytest.raises(ValueError, match=r"\[0\.25, 1\.0\]"):
        set_width(net, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        with width(net, bad):  # type: ignore[arg-type]
            pass
    assert get_width(net) == 1.0


@pytest.mark.parametrize("rng", [(0.0, 1.0), (0.5, 0.25), (0.25, 1.5), (math.nan, 1.0)])
def test_bad_width_range(rng: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="width range"):
        make_slimmable(_net(), rng)


def test_unbound_model_gets_default_range_and_single_layer_works() -> None:
    net = _net()
    set_width(net, 0.5)
    assert get_width_range(net) == (0.25, 1.0)
    assert net[0].width_control is net[3].width_control
    layer = USLinear(8, 8, divisor=1)
    set_width(layer, 0.25)
    assert layer(torch.randn(2, 2)).shape == (2, 2)
    with pytest.raises(ValueError, match="no slimmable layers"):
        set_width(nn.Linear(2, 2), 0.5)


def test_set_width_is_one_attribute_write() -> None:
    net = make_slimmable(_net())
    calls = []
    orig = nn.Module.modules

    def spy(self):  # type: ignore[no-untyped-def]
        calls.append(1)
        return orig(self)

    nn.Module.modules = spy  # type: ignore[method-assign]
    try:
        for w in (0.3, 0.6, 1.0):
            set_width(net, w)
            net(torch.randn(1, 3, 8, 8))
    finally:
        nn.Module.modules = orig  # type: ignore[method-assign]
    assert calls == []


def test_deepcopy_and_pickle_keep_one_shared_control() -> None:
    import copy
    import io

    net = make_slimmable(_net(), (0.3, 0.9))
    clone = copy.deepcopy(net)
    assert clone[0].width_control is clone[3].width_control is not net[0].width_control
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    set_width(loaded, 0.5)
    assert loaded[3].width_control.width == 0.5
    assert get_width_range(loaded) == (0.3, 0.9)


def test_sandwich_widths() -> None:
    assert sandwich_widths(1, 0.25, 1.0) == [1.0]
    assert sandwich_widths(2, 0.25, 1.0) == [1.0, 0.25]
    ws = sandwich_widths(6, 0.25, 1.0, torch.Generator().manual_seed(3))
    assert len(ws) == 6 and ws[:2] == [1.0, 0.25]
    assert all(0.25 <= w <= 1.0 for w in ws) and all(isinstance(w, float) for w in ws)
    assert ws == sandwich_widths(6, 0.25, 1.0, torch.Generator().manual_seed(3))
    assert ws != sandwich_widths(6, 0.25, 1.0, torch.Generator().manual_seed(4))
    many = [w for _ in range(200) for w in sandwich_widths(4, 0.25, 1.0)[2:]]
    assert 0.55 < sum(many) / len(many) < 0.70  # uniform in between: mean 0.625
    assert min(many) < 0.3 and max(many) > 0.95
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            sandwich_widths(bad, 0.25, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sandwich_widths(4, 0.8, 0.2)
