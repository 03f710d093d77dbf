"""The torchrun / DistributedDataParallel context of the vision and SR trainers: which process
this is, the process group, unwrapping DDP, and a cross-rank consistency check."""

from __future__ import annotations

import os

import torch
from torch import nn


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

    def close(self) -> None:
        """Leave the process group."""
        if self.world > 1:
            torch.distributed.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (``model`` itself when not wrapped)."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    assert isinstance(inner, nn.Module)
    return inner


def report_checksum(model: nn.Module, dist: Distributed) -> None:
    """Print this rank's sum of all parameters when ``USRL_CHECKSUM`` is set under torchrun: a
    cross-rank consistency check (the tests compare the ranks' lines)."""
    if dist.world > 1 and os.environ.get("USRL_CHECKSUM"):
        print(f"rank {dist.rank} checksum {sum(p.double().sum().item() for p in model.parameters()):.12f}", flush=True)
