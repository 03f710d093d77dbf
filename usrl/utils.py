"""Small helpers shared by the command-line tools (RL, vision, SR): one-line usage errors and
the entry-point wrapper, width grids, the shared --device and --distill flags, atomic file writes,
run folders and their config.yml. Depends only on the standard library (``resolve_device`` and
``write_run_config`` import torch and PyYAML when called)."""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` (one line, exit 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_widths(items: list[str]) -> list[float]:
    """``["0.25:1.0:0.05"]`` (start:stop:step, stop included) or ``["0.25", "0.5", ...]``."""
    if len(items) == 1 and ":" in items[0]:
        parts = items[0].split(":")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise UsageError(f"--widths: malformed grid {items[0]!r}; expected START:STOP:STEP") from None
        if len(parts) != 3 or step <= 0 or stop < start or not all(map(math.isfinite, (start, stop, step))):
            raise UsageError(f"--widths: malformed grid {items[0]!r}; expected START:STOP:STEP with STEP > 0")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        widths = [round(start + i * step, 10) for i in range(n)]
        return widths if math.isclose(widths[-1], stop) else [*widths, stop]
    try:
        return sorted({float(x) for x in items})
    except ValueError:
        raise UsageError(f"--widths: not a number in {items!r}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object], suffix: str = "") -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which then
    replaces ``path`` in one rename. A kill mid-write leaves the old file (or none), never a
    truncated one. ``suffix`` is given to the temporary name for writers that insist on one
    (SB3 appends ``.zip`` / ``.pkl`` to paths without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_csv(path: str | Path, rows: list[dict], fieldnames: list[str]) -> None:
    """Write ``rows`` (dicts keyed by ``fieldnames``) as a CSV file with a header, atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def next_run_dir(log_folder: str | Path, algo: str, env_name: str) -> Path:
    """``<log_folder>/<algo>/<env_name>_<k>`` with ``k`` one above the highest existing (from 1),
    as rl-zoo3 numbers its runs. The folder is not created."""
    base = Path(log_folder) / algo
    pattern = re.compile(rf"^{re.escape(env_name)}_(\d+)$")
    ks = [int(m.group(1)) for p in base.glob(f"{env_name}_*") if (m := pattern.match(p.name))]
    return base / f"{env_name}_{max(ks, default=0) + 1}"


def write_run_config(run_dir: Path, config: dict[str, Any]) -> None:
    """A run folder's ``config.yml`` (what the run was started with), as every trainer writes it."""
    import json

    import yaml

    plain = json.loads(json.dumps(config, default=str))  # tuples to lists, paths to strings
    atomic_write_text(run_dir / "config.yml", yaml.safe_dump(plain, sort_keys=False))


def resolve_distill_flags(
    distill: str | None, old_loss: str | None, no_distill: bool, default: str
) -> tuple[str, bool]:
    """The vision and SR trainers' ``--distill LOSS|none`` with their older spellings
    ``--distill-loss LOSS`` and ``--no-distill``, as (distillation loss, distillation off).
    Spellings that contradict each other are a ``UsageError``."""
    if distill is None:
        return old_loss or default, no_distill
    off = distill == "none"
    if (no_distill and not off) or (old_loss is not None and (off or old_loss != distill)):
        raise UsageError(f"--distill {distill} contradicts --no-distill / --distill-loss")
    return (default if off else distill), off


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is present, else ``"cpu"``; ``"cuda"`` without one is a UsageError."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    return name


def cli_main(prog: str, body: Callable[[], int]) -> int:
    """Run a command's ``body`` and turn a :class:`UsageError` into one line on stderr and exit
    code 2, and Ctrl-C into exit code 130. Returns the exit code."""
    import sys

    try:
        return body()
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
