"""Loading US-WDSR checkpoints and models, with one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from usrl.sr.models import WDSR, build_model

MODEL_FILE = "model.pt"  # final weights + config, in a run folder
CHECKPOINT_FILE = "checkpoint.pt"  # resumable state, in a run folder


class SRCheckpointError(ValueError):
    """A checkpoint path is missing, corrupt or not a US-WDSR checkpoint."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.pt`` file, or a run folder's ``model.pt`` (else its ``checkpoint.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, CHECKPOINT_FILE):
            if (path / name).is_file():
                return path / name
        raise SRCheckpointError(f"{path} holds no {MODEL_FILE} or {CHECKPOINT_FILE}")
    if not path.is_file():
        raise SRCheckpointError(f"no such checkpoint: {path}")
    return path


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The dictionary saved by ``usrl.sr.train`` (``SRCheckpointError`` if it is not one)."""
    path = resolve_checkpoint(path)
    try:
        data = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # truncated zips, pickles of other things, random bytes: many error types
        raise SRCheckpointError(f"cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or data.get("kind") != "usrl.sr" or "config" not in data or "model" not in data:
        raise SRCheckpointError(f"{path} is not a usrl.sr checkpoint")
    return data


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[WDSR, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on ``device``, and the checkpoint's dictionary."""
    data = read_checkpoint(path, device)
    try:
        model = build_model(data["config"])
        model.load_state_dict(data["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise SRCheckpointError(f"{resolve_checkpoint(path)}: weights do not fit its config: {exc}") from None
    return model.to(device).eval(), data


def load_model_for_cli(
    path: str | Path, device: str | torch.device, widths: list[float]
) -> tuple[WDSR, dict[str, Any]]:
    """:func:`load_model` for the command-line tools: any problem with the checkpoint, or a width
    outside the model's range, becomes a one-line ``UsageError``."""
    from usrl.utils import UsageError

    try:
        model, data = load_model(path, device)
    except SRCheckpointError as exc:
        raise UsageError(str(exc)) from None
    low, high = model.config["width_range"]
    for w in widths:
        if not low <= w <= high:
            raise UsageError(f"width {w:g} is outside the model's width range [{low:g}, {high:g}]")
    return model, data
