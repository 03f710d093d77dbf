"""Process-level helpers shared by the vision and super-resolution trainers: the torchrun /
DistributedDataParallel context, RNG state capture for resumable runs and atomic ``torch.save``.
Depends on torch and numpy only."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usrl.utils import atomic_write


class Distributed:
    """This process's place under ``torchrun`` (or a single process when not launched by it).

    Reads ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``; with several processes it joins the
    process group (nccl on ``cuda``, each process on GPU ``LOCAL_RANK``; gloo on ``cpu``).
    """

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device)
        if self.world > 1:
            backend = "nccl" if device == "cuda" else "gloo"
            if device == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group(backend)

    @property
    def main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over all processes (returned unchanged for a single process)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        """Wait for every process (no-op for a single process)."""
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group."""
        if self.world > 1:
            torch.distributed.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The global RNG states and ``generator``'s (the sandwich widths), for a checkpoint."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "widths": generator.get_state()}  # fmt: skip


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["widths"])


def save_atomic(path: str | Path, payload: Any) -> None:
    """``torch.save(payload, path)`` through a temporary file: a kill leaves the old file or none."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
