"""Small helpers shared by the command-line tools: atomic file writes and run folders."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> None:
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
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def next_run_dir(log_folder: str | Path, algo: str, env_name: str) -> Path:
    """``<log_folder>/<algo>/<env_name>_<k>`` with ``k`` one above the highest existing (from 1),
    as rl-zoo3 numbers its runs. The folder is not created."""
    base = Path(log_folder) / algo
    pattern = re.compile(rf"^{re.escape(env_name)}_(\d+)$")
    ks = [int(m.group(1)) for p in base.glob(f"{env_name}_*") if (m := pattern.match(p.name))]
    return base / f"{env_name}_{max(ks, default=0) + 1}"
