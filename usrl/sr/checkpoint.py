"""Loading US-WDSR checkpoints and models, with one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from usrl import runtime
from usrl.runtime import CHECKPOINT_FILE, MODEL_FILE, CheckpointError, resolve_checkpoint
from usrl.sr.models import WDSR, build_model

KIND = "usrl.sr"
SRCheckpointError = CheckpointError  # the name this module has always raised
__all__ = ["CHECKPOINT_FILE", "MODEL_FILE", "SRCheckpointError", "load_model", "load_model_for_cli",
           "read_checkpoint", "resolve_checkpoint"]  # fmt: skip


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The dictionary saved by ``usrl.sr.train`` (``SRCheckpointError`` if it is not one)."""
    return runtime.read_checkpoint(path, KIND, device)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[WDSR, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on ``device``, and the checkpoint's dictionary."""
    return runtime.load_model(path, KIND, build_model, device)  # type: ignore[return-value]


def load_model_for_cli(
    path: str | Path, device: str | torch.device, widths: list[float]
) -> tuple[WDSR, dict[str, Any]]:
    """:func:`load_model` for the command-line tools: any problem with the checkpoint, or a width
    outside the model's range, becomes a one-line ``UsageError``."""
    return runtime.load_model_for_cli(path, KIND, build_model, device, widths)  # type: ignore[return-value]
