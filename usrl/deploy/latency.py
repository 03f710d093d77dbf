"""Latency per width, measured on the device where the model will run, and the Pareto widths.

MACs do not predict latency (a narrower net can be slower: kernels, memory layout, threads), so
a deployment picks widths from a measured profile: :func:`measure_latency` times the model's
deployment path at each width, interleaving the widths so that a change in machine load hits
them all alike, and :func:`pareto_widths` keeps the widths that no wider width matches in speed.
Depends on torch only.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usrl.nn import profile, width_control

PROFILE_VERSION = 1


@dataclass
class LatencyRow:
    """One width of a profile: median and 90th-percentile latency of one call (ms), and MACs per call."""

    width: float
    median_ms: float
    p90_ms: float
    macs: int


@dataclass
class LatencyProfile:
    """Latency per width of one model on one device, with what it was measured on.

    ``noise_ms`` is the measured run-to-run noise of a median (half the rounds against the other
    half); ``pareto`` holds the widths no wider width matches in speed beyond that noise.
    ``device`` and ``model`` identify the measurement (see :func:`device_info`,
    :func:`model_fingerprint`) so that a profile is not used on another device or model.
    """

    rows: list[LatencyRow]
    noise_ms: float
    device: dict[str, Any]
    model: dict[str, Any]
    pareto: list[float] = field(default_factory=list)

    def row(self, width: float) -> LatencyRow:
        """The row of ``width`` (``KeyError`` if it was not measured)."""
        for r in self.rows:
            if abs(r.width - width) < 1e-9:
                return r
        raise KeyError(f"width {width:g} is not in the profile")

    def check_matches(self, device: dict[str, Any], model: dict[str, Any]) -> None:
        """``ValueError`` (one line) if this profile was measured on another device setting or model."""
        for name, mine, theirs in (("device", self.device, device), ("model", self.model, model)):
            diff = [k for k in theirs if k in mine and mine[k] != theirs[k]]
            if diff:
                k = diff[0]
                raise ValueError(
                    f"the latency profile was measured for another {name}: {k} {mine[k]!r}, here {theirs[k]!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"version": PROFILE_VERSION, "noise_ms": self.noise_ms, "pareto": self.pareto, "device": self.device,
                "model": self.model, "rows": [asdict(r) for r in self.rows]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyProfile:
        try:
            if data.get("version") != PROFILE_VERSION:
                raise ValueError(f"unsupported profile version {data.get('version')!r}")
            rows = [LatencyRow(float(r["width"]), float(r["median_ms"]), float(r["p90_ms"]), int(r["macs"]))
                    for r in data["rows"]]  # fmt: skip
            if not rows:
                raise ValueError("no rows")
            return cls(rows, float(data["noise_ms"]), dict(data["device"]), dict(data["model"]),
                       [float(w) for w in data["pareto"]])  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a latency profile: {exc}") from None

    def save(self, out: str | Path) -> None:
        """``latency.json`` (the profile), ``latency.csv`` and ``latency.png`` under ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        from usrl.utils import atomic_write_csv, atomic_write_text

        atomic_write_text(out / "latency.json", json.dumps(self.to_dict(), indent=1))
        rows = [{**asdict(r), "pareto": int(r.width in self.pareto)} for r in self.rows]
        atomic_write_csv(out / "latency.csv", rows, ["width", "median_ms", "p90_ms", "macs", "pareto"])
        plot_profile(self, out / "latency.png")

    @classmethod
    def load(cls, path: str | Path) -> LatencyProfile:
        """A profile from ``latency.json`` (or a folder holding one); ``ValueError`` if it is not one."""
        path = Path(path)
        if path.is_dir():
            path = path / "latency.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read a latency profile from {path}: {exc}") from None
        return cls.from_dict(data)


def device_info(device: torch.device | str, batch: int, input_shape: Sequence[int]) -> dict[str, Any]:
    """What a latency depends on besides the model: the processor (or GPU), torch threads, torch
    version, batch size and input shape."""
    device = torch.device(device)
    return {"type": device.type, "name": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "batch": int(batch), "input_shape": [int(s) for s in input_shape]}  # fmt: skip


def device_name(device: torch.device | str) -> str:
    """The GPU's name for a CUDA device, else the processor's model name and core count."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return (platform.processor() or platform.machine()) + f" ({os.cpu_count()} cores)"


def model_fingerprint(model: nn.Module, name: str) -> dict[str, Any]:
    """What identifies a model for a profile: its name, class, width range and parameter count."""
    control = width_control(model)
    return {"name": name, "class": type(model).__name__, "width_range": [control.low, control.high],
            "params": int(sum(p.numel() for p in model.parameters()))}  # fmt: skip


def pareto_widths(rows: Sequence[LatencyRow], noise_ms: float = 0.0) -> list[float]:
    """Widths that no wider width matches in speed: ``w`` is dropped when some wider width's median
    latency is at most ``w``'s plus ``noise_ms`` (a wider net at the same speed is the better choice)."""
    ordered = sorted(rows, key=lambda r: r.width)
    keep = []
    for i, r in enumerate(ordered):
        if not any(o.median_ms <= r.median_ms + noise_ms for o in ordered[i + 1 :]):
            keep.append(r.width)
    return keep


def _timed(call: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    widths: Sequence[float],
    forward: Callable[[nn.Module, torch.Tensor], Any] | None = None,
    rounds: int = 30,
    warmup: int = 3,
    name: str = "model",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyProfile:
    """Time ``forward(model, example)`` (default ``model(example)``) at each width.

    Each of ``rounds`` rounds runs every width once, in a fresh random order; ``warmup`` untimed
    rounds come first. A width's latency is the median (and 90th percentile) over the rounds;
    the noise is the median over widths of the gap between the medians of the even and the odd
    rounds. MACs per call come from :func:`usrl.nn.profile`. The model runs in eval mode under
    ``torch.inference_mode``; its width is restored.
    """
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2, got {rounds}")
    control = width_control(model)
    widths = sorted({control.check(w) for w in widths})
    if not widths:
        raise ValueError("no widths to measure")
    forward = forward or (lambda m, x: m(x))
    device = example.device
    previous, was_training = control.width, model.training
    model.eval()
    times: dict[float, list[float]] = {w: [] for w in widths}
    order = list(widths)
    rng = random.Random(seed)
    try:
        with torch.inference_mode():
            for r in range(warmup + rounds):
                rng.shuffle(order)
                for w in order:
                    control.width = w
                    ms = _timed(lambda: forward(model, example), device)
                    if r >= warmup:
                        times[w].append(ms)
                if progress is not None:
                    progress(r + 1, warmup + rounds)
        rows = []
        for w in widths:
            t = sorted(times[w])
            macs = profile(model, tuple(example.shape[1:]), w)["macs"] * example.shape[0]
            rows.append(LatencyRow(w, statistics.median(t), t[min(len(t) - 1, int(0.9 * len(t)))], int(macs)))
    finally:
        control.width = previous
        model.train(was_training)
    noise = statistics.median(
        abs(statistics.median(times[w][0::2]) - statistics.median(times[w][1::2])) for w in widths
    )
    info = device_info(device, example.shape[0], example.shape[1:])
    prof = LatencyProfile(rows, noise, info, model_fingerprint(model, name))
    prof.pareto = pareto_widths(rows, noise)
    return prof


def plot_profile(prof: LatencyProfile, path: str | Path) -> None:
    """Latency (median, with the p90) and MACs against width; the Pareto widths marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = [r.width for r in prof.rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(w, [r.median_ms for r in prof.rows], marker="o", ms=3, label="median latency")
    ax.fill_between(w, [r.median_ms for r in prof.rows], [r.p90_ms for r in prof.rows], alpha=0.2, label="to p90")
    pareto = [r for r in prof.rows if r.width in prof.pareto]
    ax.scatter([r.width for r in pareto], [r.median_ms for r in pareto], s=40, facecolors="none", edgecolors="k",
               zorder=3, label="Pareto widths")  # fmt: skip
    ax.set_xlabel("width")
    ax.set_ylabel("ms per call")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(w, [r.macs / 1e6 for r in prof.rows], color="grey", ls="--", lw=1, label="MMACs")
    twin.set_ylabel("MMACs per call", color="grey")
    lines = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper left")
    d = prof.device
    ax.set_title(f"{prof.model.get('name', '')}: {d['name']}, {d['threads']} threads, batch {d['batch']}"[:100],
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
