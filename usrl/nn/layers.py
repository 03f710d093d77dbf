"""Slimmable layers: built at full size, run on the leading channels the current width selects."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from usrl.nn.width import SlimmableMixin, slim_channels


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _ratios(ratio: int | tuple[int, int]) -> tuple[int, int]:
    r_in, r_out = _pair(ratio)
    if r_in < 1 or r_out < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    return r_in, r_out


def _sliced(weight: Tensor, bias: Tensor | None, index: tuple[slice, ...]) -> tuple[Tensor, Tensor | None]:
    """The leading slice of a layer's weight and bias, as views (gradients reach only the used
    weights). Never cached: optimizers with fused kernels and ``.data`` writes (SB3's
    ``polyak_update``) change weights without bumping their version counter, so no cheap key
    tells a cached copy is stale."""
    return weight[index], None if bias is None else bias[index[0]]


class _SlimmableLayer(SlimmableMixin, nn.Module):
    """Common parts of USLinear and USConv2d: the per-width shape and the shared-stem cache."""

    def _init_slimming(
        self, full_in: int, full_out: int, slim_in: bool, slim_out: bool, divisor: int, ratio: int | tuple[int, int]
    ) -> None:
        """Store and check which sides slim and how their channel counts round."""
        if divisor < 1:
            raise ValueError(f"divisor must be >= 1, got {divisor}")
        self.slim_in, self.slim_out, self.divisor = bool(slim_in), bool(slim_out), int(divisor)
        self.ratio = _ratios(ratio)
        if full_in % self.ratio[0] or full_out % self.ratio[1]:
            raise ValueError(f"sizes ({full_in}, {full_out}) must be multiples of ratio {self.ratio}")

    def _init_layer(self) -> None:
        self._init_width()
        self._shape_cache: tuple[float, tuple[int, ...]] | None = None
        self._stem_cache: list[Tensor] | None = None  # [input, full-width output] inside share_stem()

    def _shape(self, w: float) -> tuple[int, ...]:
        cached = self._shape_cache
        if cached is not None and cached[0] == w:
            return cached[1]
        shape = self.shape_at(w)
        self._shape_cache = (w, shape)
        return shape

    def shape_at(self, w: float) -> tuple[int, ...]:  # pragma: no cover - interface
        raise NotImplementedError

    def groups_fixed(self) -> bool:
        """True if the layer's output at any width is a leading slice of its full-width output."""
        return getattr(self, "groups", 1) == 1

    def _full_forward(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _from_stem_cache(self, x: Tensor, out: int, dim: int) -> Tensor:
        cache = self._stem_cache
        assert cache is not None
        if not cache or cache[0] is not x:
            cache[:] = [x, self._full_forward(x)]
        full = cache[1]
        return full if out == full.shape[dim] else full.narrow(dim, 0, out)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stem_cache"] = None
        return state


class USLinear(_SlimmableLayer):
    """A ``nn.Linear`` whose input and/or output features slim with the model's width.

    Args:
        in_features, out_features, bias: as ``nn.Linear``, at full width.
        slim_in / slim_out: whether that side follows the width (the head's outputs must not).
        divisor: channel rounding (``make_divisible``); 1 gives exact ``round(C * w)``.
        ratio: ``(r_in, r_out)`` keeps a side an exact multiple of ``r``: after flattening a
            ``C x H x W`` conv output, ``r_in = H * W`` makes the input follow the conv's channels.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        slim_in: bool = True,
        slim_out: bool = True,
        divisor: int = 8,
        ratio: int | tuple[int, int] = 1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._init_slimming(self.in_features, self.out_features, slim_in, slim_out, divisor, ratio)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        self._init_layer()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The same initialisation as ``nn.Linear``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def shape_at(self, w: float) -> tuple[int, int]:
        """``(in_features, out_features)`` used at width ``w``."""
        in_f = slim_channels(self.in_features, w, self.divisor, self.ratio[0]) if self.slim_in else self.in_features
        out_f = slim_channels(self.out_features, w, self.divisor, self.ratio[1]) if self.slim_out else self.out_features
        return in_f, out_f

    def forward(self, x: Tensor) -> Tensor:
        in_f, out_f = self._shape(self.width_control.width)
        if self._stem_cache is not None:
            return self._from_stem_cache(x, out_f, -1)
        if in_f == self.in_features and out_f == self.out_features:
            return F.linear(x, self.weight, self.bias)
        weight, bias = _sliced(self.weight, self.bias, (slice(0, out_f), slice(0, in_f)))
        return F.linear(x, weight, bias)

    def _full_forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def to_static(self) -> nn.Linear:
        in_f, out_f = self.shape_at(self.width_control.width)
        layer = nn.Linear(in_f, out_f, bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.weight[:out_f, :in_f])
            if self.bias is not None:
                layer.bias.copy_(self.bias[:out_f])
        return layer

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"slim_in={self.slim_in}, slim_out={self.slim_out}, divisor={self.divisor}, ratio={self.ratio}"
        )


class USConv2d(_SlimmableLayer):
    """A ``nn.Conv2d`` whose input and/or output channels slim with the model's width.

    Grouped and depthwise convolutions keep their channels per group fixed, so the number of
    groups follows the sliced channels (depthwise stays depthwise at every width); both sides
    must then slim together. ``divisor`` and ``ratio`` as in :class:`USLinear`.
    Only zero padding is supported.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        slim_in: bool = True,
        slim_out: bool = True,
        divisor: int = 8,
        ratio: int | tuple[int, int] = 1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}"
            )
        if groups > 1 and slim_in != slim_out:
            raise ValueError("a grouped/depthwise USConv2d must slim both sides or neither")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups = int(groups)
        self._init_slimming(self.in_channels, self.out_channels, slim_in, slim_out, divisor, ratio)
        self.in_per_group = self.in_channels // self.groups
        self.out_per_group = self.out_channels // self.groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_per_group, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if bias else None
        self._init_layer()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The same initialisation as ``nn.Conv2d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def shape_at(self, w: float) -> tuple[int, int, int]:
        """``(in_channels, out_channels, groups)`` used at width ``w``."""
        if self.groups == 1:
            in_c = slim_channels(self.in_channels, w, self.divisor, self.ratio[0]) if self.slim_in else self.in_channels
            out_c = (
                slim_channels(self.out_channels, w, self.divisor, self.ratio[1]) if self.slim_out else self.out_channels
            )
            return in_c, out_c, 1
        if not self.slim_in:
            return self.in_channels, self.out_channels, self.groups
        # round to whole groups: the divisor becomes lcm(divisor, channels per group)
        divisor = self.divisor * self.in_per_group // math.gcd(self.divisor, self.in_per_group)
        in_c = slim_channels(self.in_channels, w, divisor, self.ratio[0])
        groups = in_c // self.in_per_group
        return in_c, groups * self.out_per_group, groups

    def forward(self, x: Tensor) -> Tensor:
        in_c, out_c, groups = self._shape(self.width_control.width)
        if self._stem_cache is not None:
            return self._from_stem_cache(x, out_c, 1)
        weight: Tensor
        bias: Tensor | None
        if out_c == self.out_channels and in_c == self.in_channels:
            weight, bias = self.weight, self.bias
        elif groups == 1:
            weight, bias = _sliced(self.weight, self.bias, (slice(0, out_c), slice(0, in_c)))
        else:
            weight, bias = _sliced(self.weight, self.bias, (slice(0, out_c),))
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def _full_forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def to_static(self) -> nn.Conv2d:
        in_c, out_c, groups = self.shape_at(self.width_control.width)
        layer = nn.Conv2d(
            in_c, out_c, self.kernel_size, self.stride, self.padding, self.dilation, groups,
            bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype,
        )  # fmt: skip
        with torch.no_grad():
            layer.weight.copy_(self.weight[:out_c, : in_c // groups])
            if self.bias is not None and layer.bias is not None:
                layer.bias.copy_(self.bias[:out_c])
        return layer

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
            f"slim_in={self.slim_in}, slim_out={self.slim_out}, divisor={self.divisor}, ratio={self.ratio}"
        )


class USWNConv2d(USConv2d):
    """A weight-normalised :class:`USConv2d`: ``W = g * v / ||v||`` per output channel.

    ``weight`` holds the direction ``v`` and ``weight_g`` the per-output-channel scale ``g``
    (initialised to ``||v||``, so ``W = v`` at first). At a smaller width the norm is taken over
    the weights actually used, ``v[:out, :in]``: every width is itself a weight-normalised conv,
    equal to ``torch.nn.utils.parametrizations.weight_norm`` of a conv holding that slice of
    ``v`` and ``g``. (Normalising by the full row instead would shrink the narrow widths'
    filters by a width-dependent factor.) ``to_static`` exports the folded weight as a plain
    ``nn.Conv2d``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with torch.no_grad():
            g = self.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        self.weight_g = nn.Parameter(g.clone())

    def _folded(self, in_c: int, out_c: int, groups: int) -> Tensor:
        v = self.weight if groups > 1 or in_c == self.in_channels else self.weight[:, : in_c // groups]
        if out_c != self.out_channels:
            v = v[:out_c]
        norm = v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return v * (self.weight_g[:out_c] / norm)

    def forward(self, x: Tensor) -> Tensor:
        in_c, out_c, groups = self._shape(self.width_control.width)
        if self._stem_cache is not None:
            return self._from_stem_cache(x, out_c, 1)
        bias = self.bias if self.bias is None or out_c == self.out_channels else self.bias[:out_c]
        return F.conv2d(x, self._folded(in_c, out_c, groups), bias, self.stride, self.padding, self.dilation, groups)

    def _full_forward(self, x: Tensor) -> Tensor:
        weight = self._folded(self.in_channels, self.out_channels, self.groups)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def to_static(self) -> nn.Conv2d:
        layer = super().to_static()
        in_c, out_c, groups = self.shape_at(self.width_control.width)
        with torch.no_grad():
            layer.weight.copy_(self._folded(in_c, out_c, groups))
        return layer


def width_key(w: float) -> float:
    """The key under which per-width statistics are stored (width rounded to 6 decimals)."""
    return round(float(w), 6)


class USBatchNorm2d(SlimmableMixin, nn.Module):
    """BatchNorm for slimmable nets: shared, sliced affine parameters; statistics per width.

    * Training mode normalises with the batch's statistics and keeps no running averages
      (they would mix widths).
    * Eval mode uses statistics calibrated for the current width by
      :func:`usrl.nn.calibrate_bn`. They are kept per width, saved in the ``state_dict``
      (``_extra_state``), and dropped as soon as the layer runs in training mode again, since
      training changes the features they describe.
    * Eval at a width that was never calibrated raises ``RuntimeError``, unless the layer was
      built with ``uncalibrated="batch"``, an explicit fallback to the batch's own statistics.

    ``slim``, ``divisor`` and ``ratio`` say how many leading channels are used at a width, as
    for the layer that feeds it (``slim=False`` for a fixed-size layer, whose statistics still
    depend on the width of the layers before it).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        slim: bool = True,
        divisor: int = 8,
        ratio: int = 1,
        uncalibrated: str = "error",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if uncalibrated not in ("error", "batch"):
            raise ValueError(f"uncalibrated must be 'error' or 'batch', got {uncalibrated!r}")
        if num_features % ratio:
            raise ValueError(f"num_features {num_features} must be a multiple of ratio {ratio}")
        self.num_features, self.eps, self.affine = int(num_features), float(eps), bool(affine)
        self.slim, self.divisor, self.ratio = bool(slim), int(divisor), int(ratio)
        self.uncalibrated = uncalibrated
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.ones(self.num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(self.num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self._init_width()
        self.stats: dict[float, tuple[Tensor, Tensor]] = {}
        self._accumulator: list[Tensor | float] | None = None

    def channels_at(self, w: float) -> int:
        """Channels normalised at width ``w``."""
        return slim_channels(self.num_features, w, self.divisor, self.ratio) if self.slim else self.num_features

    def _affine(self, c: int) -> tuple[Tensor | None, Tensor | None]:
        if not self.affine:
            return None, None
        if c == self.num_features:
            return self.weight, self.bias
        return self.weight[:c], self.bias[:c]

    def forward(self, x: Tensor) -> Tensor:
        w = self.width_control.width
        c = self.channels_at(w)
        weight, bias = self._affine(c)
        if self._accumulator is not None:
            self._accumulate(x)
        elif self.training:
            if self.stats:
                self.stats.clear()
        else:
            stats = self.stats.get(width_key(w))
            if stats is not None:
                return F.batch_norm(x, stats[0], stats[1], weight, bias, False, 0.0, self.eps)
            if self.uncalibrated == "error":
                known = ", ".join(f"{k:g}" for k in sorted(self.stats)) or "none"
                raise RuntimeError(
                    f"USBatchNorm2d has no statistics for width {w:g} (calibrated: {known}); "
                    f"run usrl.nn.calibrate_bn(model, batches, {w:g}) before evaluating at this width"
                )
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    # --- calibration -------------------------------------------------------------------
    def begin_calibration(self) -> None:
        """Start accumulating exact per-channel statistics of the inputs (used by calibrate_bn)."""
        self._accumulator = [0.0, 0.0, 0.0]  # count, mean, M2 (float64 tensors once data arrives)

    def _accumulate(self, x: Tensor) -> None:
        # Chan et al.'s parallel update: every sample weighs the same, whatever the batch sizes.
        acc = self._accumulator
        assert acc is not None
        xd = x.detach().to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
        n_b = xd.shape[1]
        mean_b = xd.mean(dim=1)
        m2_b = ((xd - mean_b[:, None]) ** 2).sum(dim=1)
        n_a = acc[0]
        n = n_a + n_b
        delta = mean_b - acc[1]
        acc[1] = acc[1] + delta * (n_b / n)
        acc[2] = acc[2] + m2_b + delta**2 * (n_a * n_b / n)
        acc[0] = n

    def end_calibration(self, w: float) -> None:
        """Store the accumulated statistics as width ``w``'s (unbiased variance, like PyTorch's BN)."""
        acc, self._accumulator = self._accumulator, None
        if acc is None or acc[0] == 0:
            raise RuntimeError("no data reached this USBatchNorm2d during calibration")
        count, total_mean, m2 = acc
        assert isinstance(total_mean, Tensor) and isinstance(m2, Tensor)  # data arrived
        mean = total_mean.to(self._stat_dtype())
        var = (m2 / max(count - 1, 1)).to(self._stat_dtype())
        self.stats[width_key(w)] = (mean, var)

    def abort_calibration(self) -> None:
        """Drop a calibration in progress, keeping earlier statistics."""
        self._accumulator = None

    def _stat_dtype(self) -> torch.dtype:
        return self.weight.dtype if self.weight is not None else torch.get_default_dtype()

    def calibrated_widths(self) -> list[float]:
        """Widths that have calibrated statistics."""
        return sorted(self.stats)

    # --- persistence and device moves -------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"stats": {k: (m.clone(), v.clone()) for k, (m, v) in self.stats.items()}}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        device = self.weight.device if self.weight is not None else None
        self.stats = {
            float(k): (m.to(device=device), v.to(device=device)) for k, (m, v) in state.get("stats", {}).items()
        }

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        super()._apply(fn, recurse)
        self.stats = {k: (fn(m), fn(v)) for k, (m, v) in self.stats.items()}
        return self

    def to_static(self) -> nn.BatchNorm2d:
        w = self.width_control.width
        stats = self.stats.get(width_key(w))
        if stats is None:
            raise RuntimeError(f"USBatchNorm2d has no calibrated statistics for width {w:g}; run calibrate_bn first")
        c = self.channels_at(w)
        layer = nn.BatchNorm2d(c, eps=self.eps, affine=self.affine, device=stats[0].device, dtype=stats[0].dtype)
        assert (
            layer.running_mean is not None and layer.running_var is not None and layer.num_batches_tracked is not None
        )
        with torch.no_grad():
            layer.running_mean.copy_(stats[0])
            layer.running_var.copy_(stats[1])
            layer.num_batches_tracked.fill_(1)
            if self.affine:
                layer.weight.copy_(self.weight[:c])
                layer.bias.copy_(self.bias[:c])
        return layer.eval()

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, affine={self.affine}, slim={self.slim}, divisor={self.divisor}, "
            f"ratio={self.ratio}, uncalibrated={self.uncalibrated!r}"
        )


class USGroupNorm(SlimmableMixin, nn.Module):
    """GroupNorm over the channels in use: a width-independent norm that needs no calibration.

    ``num_groups`` stays fixed, so the channel count at every width must be a multiple of it
    (choose the feeding layer's ``divisor`` accordingly); otherwise forward raises ``ValueError``.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        slim: bool = True,
        divisor: int = 8,
        ratio: int = 1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels {num_channels} must be divisible by num_groups {num_groups}")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = float(eps), bool(affine)
        self.slim, self.divisor, self.ratio = bool(slim), int(divisor), int(ratio)
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.ones(self.num_channels, **factory))
            self.bias = nn.Parameter(torch.zeros(self.num_channels, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self._init_width()

    def channels_at(self, w: float) -> int:
        """Channels normalised at width ``w``."""
        return slim_channels(self.num_channels, w, self.divisor, self.ratio) if self.slim else self.num_channels

    def forward(self, x: Tensor) -> Tensor:
        c = self.channels_at(self.width_control.width)
        if c % self.num_groups:
            raise ValueError(
                f"USGroupNorm: {c} channels at width {self.width_control.width:g} are not divisible by {self.num_groups} groups"
            )
        weight = bias = None
        if self.affine:
            weight, bias = self.weight[:c], self.bias[:c]
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)

    def to_static(self) -> nn.GroupNorm:
        c = self.channels_at(self.width_control.width)
        layer = nn.GroupNorm(self.num_groups, c, eps=self.eps, affine=self.affine)
        if self.affine:
            layer = layer.to(device=self.weight.device, dtype=self.weight.dtype)
            with torch.no_grad():
                layer.weight.copy_(self.weight[:c])
                layer.bias.copy_(self.bias[:c])
        return layer

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, slim={self.slim}"


@contextmanager
def share_stem(model: nn.Module) -> Iterator[None]:
    """Compute each fixed-input layer once per input tensor and serve every width from it.

    A layer whose inputs do not slim (``slim_in=False``, e.g. the first conv of a CNN or the
    first layer of an MLP) produces, at any width, the leading channels of its full-width
    output. Inside this block such layers keep their full-width output for the last input
    tensor they saw (matched by identity) and return slices of it, so a sandwich step pays for
    the stem once instead of once per width. Results and gradients are exact; since the widths
    then share part of one graph, sum their losses and call ``backward`` once (or pass
    ``retain_graph=True``).
    """
    stems = [m for m in model.modules() if isinstance(m, _SlimmableLayer) and not m.slim_in and m.groups_fixed()]
    for m in stems:
        m._stem_cache = []
    try:
        yield
    finally:
        for m in stems:
            m._stem_cache = None
